//! Compresses the web UI's build (`web/dist`) with gzip at the highest
//! level and generates the table `src/lib.rs` serves from: one entry per
//! file with its path, content type, ETag and the compressed bytes
//! (`include_bytes!` of a file in `OUT_DIR`). Only the compressed form is
//! embedded, so the binary grows by about a third of the UI's size, and the
//! bytes go out as they are, with `Content-Encoding: gzip`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dist = manifest.join("../../web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());

    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    } else {
        println!("cargo:warning=web/dist is missing: this build serves no web UI (run `npm run build` in web/)");
    }
    files.sort();

    let gz_dir = out.join("ui");
    std::fs::create_dir_all(&gz_dir).expect("create OUT_DIR/ui");
    let mut table = String::from("&[\n");
    for (i, (name, path)) in files.iter().enumerate() {
        let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let gz = gzip(&raw);
        let gz_path = gz_dir.join(format!("{i}.gz"));
        std::fs::write(&gz_path, &gz).expect("write compressed file");
        // The gzip trailer holds the CRC-32 and length of the original bytes.
        let crc = u32::from_le_bytes(gz[gz.len() - 8..gz.len() - 4].try_into().expect("gzip trailer"));
        let _ = writeln!(
            table,
            "    Asset {{ path: {name:?}, content_type: {ct:?}, etag: \"\\\"{crc:08x}-{len:x}\\\"\", gzip: include_bytes!({gz:?}) }},",
            ct = content_type(name),
            len = raw.len(),
            gz = gz_path.display().to_string(),
        );
    }
    table.push(']');
    std::fs::write(out.join("assets.rs"), table).expect("write assets.rs");
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let name = path
                .strip_prefix(root)
                .expect("under the root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((name, path));
        }
    }
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(raw).expect("compress in memory");
    encoder.finish().expect("compress in memory")
}

/// The types a Vite build produces; anything else is served as bytes.
fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
