#!/usr/bin/env python3
"""Secret scan: detect-secrets over every tracked file; fails on a finding
that is not in the committed baseline (.secrets.baseline).

Findings are compared by file and secret hash, not by line, so moving a
known test fixture does not fail the scan. After adding a deliberate fake
secret (a test fixture), update the baseline and review the diff:

    detect-secrets scan --baseline .secrets.baseline
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BASELINE = os.path.join(ROOT, ".secrets.baseline")


def findings(path):
    with open(path) as f:
        results = json.load(f)["results"]
    return {(name, r["hashed_secret"]): (r["type"], r["line_number"])
            for name, rs in results.items() for r in rs}


def main():
    known = findings(BASELINE)
    with tempfile.TemporaryDirectory() as tmp:
        scan = os.path.join(tmp, "baseline.json")
        shutil.copy(BASELINE, scan)
        # Rescans the tracked files with the baseline's settings and
        # exclusions, keeping its entries and adding new findings.
        subprocess.run(["detect-secrets", "scan", "--baseline", scan], cwd=ROOT, check=True)
        now = findings(scan)
    new = sorted(set(now) - set(known))
    if new:
        for name, secret in new:
            kind, line = now[(name, secret)]
            print(f"possible secret: {name}:{line} ({kind})", file=sys.stderr)
        sys.exit(f"secret scan: {len(new)} finding(s) not in .secrets.baseline; remove the secret, "
                 "or if it is a deliberate fake, run `detect-secrets scan --baseline .secrets.baseline`")
    print(f"ok: secret scan: no new findings ({len(known)} known in .secrets.baseline)")


if __name__ == "__main__":
    main()
