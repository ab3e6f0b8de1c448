// Generated from the Atlas OpenAPI document by web/scripts/generate-client.mjs. Do not edit.

export interface paths {
    "/api/v1/audit": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Audit rows the caller may see, newest first: filter by entity, by actor,
         *     or by collection and time range (any combination). A member sees the
         *     rows of the collections they belong to and the rows of their own
         *     actions; an admin sees every row.
         */
        get: operations["list_audit"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/audit/public-key": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * The public key that checkpoints are signed with, for checking exported
         *     bundles offline. Needs no sign-in.
         */
        get: operations["public_key"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/audit/verify": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Walk the whole chain and its checkpoints (admins). `ok` is false when a
         *     row or checkpoint fails; `first_bad_sequence` and `reason` say where and why.
         */
        get: operations["verify_chain"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/auth/login": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Sign in with email and password. */
        post: operations["login"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/auth/logout": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Sign out: revoke the refresh token's family. Access tokens expire on their own. */
        post: operations["logout"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/auth/me": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The signed-in user. */
        get: operations["me"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/auth/refresh": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Exchange a refresh token for new tokens. The presented token is used up;
         *     presenting a used or revoked one revokes its whole family.
         */
        post: operations["refresh"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/auth/register": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Create an account and sign in. */
        post: operations["register"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/auth/tokens": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The caller's active personal access tokens (without their secrets). */
        get: operations["list_tokens"];
        put?: never;
        /** Create a personal access token for scripts. */
        post: operations["create_token"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/auth/tokens/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post?: never;
        /** Revoke one of the caller's personal access tokens. */
        delete: operations["delete_token"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/collections": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The caller's collections, oldest first. */
        get: operations["list_collections"];
        put?: never;
        /** Create a collection; the caller becomes its owner. */
        post: operations["create_collection"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/collections/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One collection (members only). */
        get: operations["get_collection"];
        put?: never;
        post?: never;
        /**
         * Delete a collection with everything in it (owner). Emits a delete event
         *     for each item and then `CollectionDeleted`.
         */
        delete: operations["delete_collection"];
        options?: never;
        head?: never;
        /** Rename, re-slug or describe a collection (owner). */
        patch: operations["update_collection"];
        trace?: never;
    };
    "/api/v1/collections/{id}/items": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Items of a collection (members), with keyset pagination. */
        get: operations["list_items"];
        put?: never;
        /** Add an item to a collection (owner, editor). */
        post: operations["create_item"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/collections/{id}/members": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Members of a collection (members only). */
        get: operations["list_members"];
        put?: never;
        /** Add a user to a collection by email or user id (owner). */
        post: operations["add_member"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/collections/{id}/members/{user_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        post?: never;
        /**
         * Remove a member (owner), or leave a collection (any member, for themself).
         *     The last owner cannot be removed.
         */
        delete: operations["remove_member"];
        options?: never;
        head?: never;
        /** Change a member's role (owner). The last owner cannot be demoted. */
        patch: operations["update_member"];
        trace?: never;
    };
    "/api/v1/collections/{id}/rules": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** A collection's rules (owners). */
        get: operations["list_rules"];
        put?: never;
        /**
         * Add a rule to a collection (owners). The body is one rule, as YAML
         *     (`application/yaml`) or JSON, with the fields of the rules language.
         */
        post: operations["create_rule"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/collections/{id}/rules/{rule_id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One of a collection's rules (owners). */
        get: operations["get_rule"];
        /** Replace a rule (owners); the change is kept as a new version. */
        put: operations["update_rule"];
        post?: never;
        /** Delete a rule (owners); its versions stay readable. */
        delete: operations["delete_rule"];
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/collections/{id}/rules/{rule_id}/versions": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Every version of a rule, oldest first, with its author and time. */
        get: operations["rule_versions"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/collections/{id}/tags": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Tags in use in a collection, by name, with item counts (members). */
        get: operations["list_tags"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/events/stream": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Server-Sent Events of the caller's collections. Each message's `id` is
         *     the event's sequence, `event` its type and `data` the envelope.
         */
        get: operations["stream"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/events/ws": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** The same feed over a WebSocket: one JSON envelope per text message. */
        get: operations["websocket"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/items/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One item (members of its collection). */
        get: operations["get_item"];
        put?: never;
        post?: never;
        /** Delete an item (owner, editor). */
        delete: operations["delete_item"];
        options?: never;
        head?: never;
        /**
         * Change an item (owner, editor). With `If-Match: "<version>"` the change
         *     only applies to that version (else 412).
         */
        patch: operations["update_item"];
        trace?: never;
    };
    "/api/v1/jobs": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Jobs the caller created or that belong to their collections, newest first. */
        get: operations["list_jobs"];
        put?: never;
        /** Enqueue a job. */
        post: operations["create_job"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/jobs/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One job. */
        get: operations["get_job"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/jobs/{id}/cancel": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Cancel a job: a queued one at once; a running one at its worker's next
         *     heartbeat (`cancel_requested` is set meanwhile).
         */
        post: operations["cancel_job"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/jobs/{id}/retry": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Run a dead job again (its attempts start over). */
        post: operations["retry_job"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/rules/test": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /**
         * Dry-run rules against a sample event: the actions they would take, in
         *     order, with templates filled in. Nothing is changed.
         */
        post: operations["test_rules"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/rules/validate": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Check rules (YAML or JSON; one rule or a list) without storing them. */
        post: operations["validate"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/search/items": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** Search items of the caller's collections. */
        get: operations["search_items"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/webhooks/deliveries": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /**
         * Webhook delivery attempts, newest first: a collection's (owners), or all
         *     (administrators).
         */
        get: operations["list_deliveries"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/workflows": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        get?: never;
        put?: never;
        /** Start a workflow. */
        post: operations["start_workflow"];
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
    "/api/v1/workflows/{id}": {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** One workflow with each step's status, attempts, output and error. */
        get: operations["get_workflow"];
        put?: never;
        post?: never;
        delete?: never;
        options?: never;
        head?: never;
        patch?: never;
        trace?: never;
    };
}
export type webhooks = Record<string, never>;
export interface components {
    schemas: {
        AddMember: {
            /** @description The user's email; give this or `user_id`. */
            email?: string | null;
            /**
             * @description owner, editor or viewer.
             * @example viewer
             */
            role: string;
            user_id?: string | null;
        };
        /** @description What an audit row is about. */
        AuditEntity: {
            collection_id?: string | null;
            id: string;
            /** @description `user`, `collection`, `membership`, `item`, `job` or `workflow`. */
            type: string;
        };
        /** @description A page of audit rows, newest first. */
        AuditPage: {
            items: components["schemas"]["AuditRecord"][];
            next_cursor?: string | null;
        };
        /** @description One row of the audit trail, as stored, served and exported. */
        AuditRecord: {
            /** @description The user whose request caused the event (for jobs and workflows, their creator). */
            actor_user_id?: string | null;
            /** @description The event's data, secrets redacted. */
            data: Record<string, unknown>;
            entity: components["schemas"]["AuditEntity"];
            event_id: string;
            /** @description SHA-256 of this row's canonical content and `prev_hash`, lowercase hex. */
            hash: string;
            /** @description When the change happened (from the event). */
            occurred_at: string;
            /** @description The `hash` of the previous row (64 zeros for the first). */
            prev_hash: string;
            /** @description When the audit sink appended the row; never decreases along the chain. */
            recorded_at: string;
            request_id: string;
            /**
             * Format: int64
             * @description Position in the chain: 1, 2, 3, … without gaps.
             */
            sequence: number;
            trace_id: string;
            /** @description The event type, e.g. `ItemCreated`. */
            type: string;
        };
        /** @description Tokens for a signed-in session. */
        AuthResponse: {
            /** @description JWT for `Authorization: Bearer …`. */
            access_token: string;
            /**
             * Format: int64
             * @description Seconds until the access token expires.
             */
            expires_in: number;
            /** @description Opaque; exchange at `/auth/refresh`. Single use: each refresh rotates it. */
            refresh_token: string;
            /** @example Bearer */
            token_type: string;
            user: components["schemas"]["User"];
        };
        /** @description A signed statement about the head of the chain. */
        Checkpoint: {
            created_at: string;
            /** @description That row's hash. */
            hash: string;
            /** @description Id of the key that signed. */
            key_id: string;
            /**
             * Format: int64
             * @description The last row covered.
             */
            sequence: number;
            /** @description Ed25519 signature, standard base64. */
            signature: string;
        };
        /** @description A collection, with the caller's role in it. */
        Collection: {
            created_at: string;
            created_by: string;
            description?: string | null;
            id: string;
            name: string;
            /**
             * @description The caller's role: owner, editor or viewer.
             * @example owner
             */
            role: string;
            slug: string;
            updated_at: string;
        };
        CollectionPage: {
            items: components["schemas"]["Collection"][];
            next_cursor?: string | null;
        };
        CreateCollection: {
            /** @description Up to 2,000 characters. */
            description?: string | null;
            /**
             * @description 1–200 characters.
             * @example Reading list
             */
            name: string;
            /** @description `[a-z0-9-]{1,64}`, globally unique; derived from the name when absent. */
            slug?: string | null;
        };
        CreateItem: {
            /** @description Up to 1 MiB of UTF-8. */
            body?: string | null;
            /** @description A JSON object, up to 64 KiB. */
            metadata?: Record<string, unknown> | null;
            /** @description An absolute http(s) URL. */
            source_url?: string | null;
            /** @description Each 1–64 characters; at most 32 after de-duplication. */
            tags?: string[];
            /**
             * @description 1–500 characters.
             * @example Rust async book
             */
            title: string;
        };
        CreateJob: {
            /** @description Same key and payload again → the existing job (200); another payload → 409. */
            idempotency_key?: string | null;
            /**
             * Format: int64
             * @description 1–100; default `jobs.default_max_attempts`.
             */
            max_attempts?: number | null;
            /** @description A JSON object; item jobs need `item_id`. */
            payload: Record<string, unknown>;
            /**
             * Format: int64
             * @description Higher runs first; default 0.
             */
            priority?: number | null;
            /** @description Not run before this time (RFC 3339). */
            run_at?: string | null;
            /**
             * @description `ENRICH_URL`, `REINDEX_ITEM` (payload `{item_id}`) or `NOOP` (administrators).
             * @example ENRICH_URL
             */
            type: string;
        };
        CreateTokenRequest: {
            /**
             * Format: int64
             * @description 1–3650; without it the token does not expire.
             */
            expires_in_days?: number | null;
            /**
             * @description What the token is for, 1–100 characters.
             * @example backup script
             */
            name: string;
        };
        /** @description One logged attempt, as `GET /webhooks/deliveries` shows it. */
        Delivery: {
            /**
             * Format: int64
             * @description 1 for the first attempt of this webhook for this event.
             */
            attempt: number;
            collection_id?: string | null;
            created_at: string;
            /** Format: int64 */
            duration_ms: number;
            error?: string | null;
            event_id: string;
            event_type: string;
            id: string;
            /** @description delivered, failed, refused, retrying or dead. */
            outcome: string;
            /** @description `global:<file>:<name>` or `collection:<rule id>`. */
            rule_key: string;
            rule_name: string;
            /** Format: int64 */
            status_code?: number | null;
            url: string;
        };
        DeliveryPage: {
            items: components["schemas"]["Delivery"][];
            next_cursor?: string | null;
        };
        /**
         * @description The JSON body of every non-2xx response.
         * @example {
         *       "code": "validation_failed",
         *       "details": {
         *         "field": "title"
         *       },
         *       "message": "title must not be empty"
         *     }
         */
        ErrorBody: {
            /** @description Stable, snake_case machine-readable code. */
            code: string;
            /** @description Extra structured context; always an object, possibly empty. */
            details: Record<string, unknown>;
            /** @description Human-readable explanation, safe to show to users. */
            message: string;
        };
        /** @description Matches in an item's text: `<mark>` around them, the rest HTML-escaped. */
        Highlights: {
            body?: string | null;
            title?: string | null;
        };
        /** @description An item in a collection. */
        Item: {
            body?: string | null;
            collection_id: string;
            created_at: string;
            created_by: string;
            id: string;
            /**
             * @description `indexed` once the search index (of the node answering) holds this
             *     version; `pending` before, and always in a build without search.
             * @example pending
             */
            index_status: string;
            metadata: Record<string, unknown>;
            /** @example https://rust-lang.github.io/async-book/ */
            source_url?: string | null;
            /** @description Trimmed, lower-cased, unique; at most 32. */
            tags: string[];
            /** @example Rust async book */
            title: string;
            updated_at: string;
            /**
             * Format: int64
             * @description Starts at 1, +1 per update; sent as `ETag` and checked by `If-Match`.
             */
            version: number;
        };
        ItemPage: {
            items: components["schemas"]["Item"][];
            next_cursor?: string | null;
        };
        /** @description A job (SPEC §2 "Jobs and workflows"). */
        Job: {
            /**
             * Format: int64
             * @description Attempts started so far.
             */
            attempts: number;
            /** @description A running job whose cancellation was asked for; its worker stops it. */
            cancel_requested: boolean;
            created_at: string;
            created_by?: string | null;
            finished_at?: string | null;
            id: string;
            idempotency_key?: string | null;
            last_error?: string | null;
            /** Format: int64 */
            max_attempts: number;
            payload: Record<string, unknown>;
            /**
             * Format: int64
             * @description Higher runs first.
             */
            priority: number;
            /** @description What the handler returned, once succeeded. */
            result?: Record<string, unknown> | null;
            /** @description Not claimed before this time; for a failed job, when it is retried. */
            run_at: string;
            started_at?: string | null;
            status: components["schemas"]["JobStatus"];
            /** @example ENRICH_URL */
            type: string;
            updated_at: string;
            workflow_id?: string | null;
        };
        JobPage: {
            items: components["schemas"]["Job"][];
            next_cursor?: string | null;
        };
        /**
         * @description Where a job is in its life.
         * @enum {string}
         */
        JobStatus: "queued" | "running" | "succeeded" | "failed" | "dead" | "cancelled";
        LoginRequest: {
            email: string;
            password: string;
        };
        /** @description A member of a collection. */
        Member: {
            created_at: string;
            display_name?: string | null;
            email: string;
            /** @example editor */
            role: string;
            updated_at: string;
            user_id: string;
        };
        MemberPage: {
            items: components["schemas"]["Member"][];
            next_cursor?: string | null;
        };
        /** @description A personal access token (its secret is only in the create response). */
        PersonalToken: {
            created_at: string;
            expires_at?: string | null;
            id: string;
            name: string;
            /** @description Only in the response that created it; store it now. */
            token?: string | null;
        };
        PersonalTokenPage: {
            items: components["schemas"]["PersonalToken"][];
            next_cursor?: string | null;
        };
        /** @description An action a rule would take. */
        PlannedAction: {
            action: string;
            /** @description Arguments with templates filled in from the event. */
            args: Record<string, unknown>;
            rule: string;
        };
        /**
         * @description What is wrong at the first bad sequence.
         * @enum {string}
         */
        Problem: "gap" | "broken_link" | "hash_mismatch" | "checkpoint_mismatch" | "bad_signature" | "unknown_key" | "missing_rows" | "unverifiable";
        /** @description The node's checkpoint-signing key. */
        PublicKeyResponse: {
            /** @description Always `Ed25519`. */
            algorithm: string;
            /** @description First 16 hex digits of SHA-256 over the 32 key bytes; checkpoints name it. */
            key_id: string;
            /** @description The 32 key bytes, standard base64 (what `atlas audit verify-bundle --public-key` takes). */
            public_key: string;
            /** @description The same key as an SPKI PEM. */
            public_key_pem: string;
        };
        RefreshRequest: {
            refresh_token: string;
        };
        RegisterRequest: {
            /** @example Ada */
            display_name?: string | null;
            /** @example ada@example.org */
            email: string;
            /**
             * @description 8–256 characters.
             * @example correct horse battery
             */
            password: string;
        };
        /** @description One problem found in rule text. */
        RuleIssue: {
            column: number;
            line: number;
            message: string;
        };
        RuleList: {
            items: components["schemas"]["StoredRule"][];
        };
        /** @description One version of a collection rule. */
        RuleVersion: {
            author_user_id?: string | null;
            /** @description `created`, `updated` or `deleted`. */
            change: string;
            created_at: string;
            definition: Record<string, unknown>;
            rule_id: string;
            /** @description The text as submitted (YAML or JSON). */
            source: string;
            /** Format: int64 */
            version: number;
        };
        SearchHit: {
            highlights: components["schemas"]["Highlights"];
            item: components["schemas"]["Item"];
            /**
             * Format: float
             * @description Relevance (higher is better); comparable within one search only.
             */
            score: number;
        };
        SearchPage: {
            items: components["schemas"]["SearchHit"][];
            next_cursor?: string | null;
            /**
             * Format: int64
             * @description Items matching, as the index counts them (before the final
             *     permission and existence re-check).
             */
            total_estimate: number;
        };
        StartWorkflow: {
            input?: Record<string, unknown>;
            /**
             * @description `ITEM_INTAKE` (input `{item_id}`) or `HEALTH_CHECK` (input `{}`, administrators).
             * @example ITEM_INTAKE
             */
            type: string;
        };
        /** @description One step of a workflow. */
        Step: {
            /** Format: int64 */
            attempts: number;
            error?: string | null;
            /** @description The job running this step (absent until the step starts, or when skipped). */
            job_id?: string | null;
            /** @example enrich */
            name: string;
            output?: Record<string, unknown> | null;
            status: components["schemas"]["StepStatus"];
        };
        /**
         * @description Where one step of a workflow is.
         * @enum {string}
         */
        StepStatus: "pending" | "running" | "succeeded" | "failed" | "skipped";
        /** @description A collection's rule, as the API shows it. */
        StoredRule: {
            collection_id: string;
            created_at: string;
            created_by?: string | null;
            /** @description The rule as checked: `name`, `on`, `when`, `do`, `enabled`, `priority`. */
            definition: Record<string, unknown>;
            id: string;
            name: string;
            updated_at: string;
            updated_by?: string | null;
            /**
             * Format: int64
             * @description 1 when created; each update adds one.
             */
            version: number;
        };
        /** @description A tag and how many items carry it. */
        TagCount: {
            /** Format: int64 */
            count: number;
            name: string;
        };
        TagPage: {
            items: components["schemas"]["TagCount"][];
            next_cursor?: string | null;
        };
        /** @description `POST /rules/test`'s request. */
        TestRequest: {
            /** @description A sample event envelope. */
            event: Record<string, unknown>;
            /** @description A list of rules (objects as in YAML), or YAML text. */
            rules: Record<string, unknown>;
        };
        TestResult: {
            actions: components["schemas"]["PlannedAction"][];
        };
        UpdateCollection: {
            /** @description `null` clears it. */
            description?: string | null;
            name?: string | null;
            slug?: string | null;
        };
        UpdateItem: {
            /** @description `null` clears it. */
            body?: string | null;
            /** @description Replaces the item's metadata. */
            metadata?: Record<string, unknown> | null;
            /** @description `null` clears it. */
            source_url?: string | null;
            /** @description Replaces the item's tags. */
            tags?: string[] | null;
            title?: string | null;
        };
        UpdateMember: {
            /** @example editor */
            role: string;
        };
        /** @description A user as the API shows it (never with the password hash). */
        User: {
            created_at: string;
            display_name?: string | null;
            email: string;
            id: string;
            is_admin: boolean;
        };
        /** @description `POST /rules/validate`'s answer. */
        Validation: {
            errors: components["schemas"]["RuleIssue"][];
            valid: boolean;
        };
        /** @description The outcome of a verification (`GET /api/v1/audit/verify`). */
        VerifyReport: {
            /**
             * Format: int64
             * @description Rows that verified before the first problem (all rows when `ok`).
             */
            checked: number;
            /** Format: int64 */
            first_bad_sequence?: number | null;
            last_checkpoint?: null | components["schemas"]["Checkpoint"];
            /** @description Whether the whole chain and every checkpoint verified. */
            ok: boolean;
            problem?: null | components["schemas"]["Problem"];
            /** @description Why that sequence is bad, in words. */
            reason?: string | null;
        };
        VersionList: {
            items: components["schemas"]["RuleVersion"][];
        };
        /** @description A workflow (SPEC §2): its steps in order, each with its state. */
        Workflow: {
            created_at: string;
            created_by?: string | null;
            finished_at?: string | null;
            id: string;
            input: Record<string, unknown>;
            /**
             * @description Once succeeded, the outputs of its succeeded steps merged into one
             *     object (`ITEM_INTAKE`: the enrichment, `added_tags`, the reindexed
             *     `version`; `HEALTH_CHECK`: the report).
             */
            output?: Record<string, unknown> | null;
            status: components["schemas"]["WorkflowStatus"];
            steps: components["schemas"]["Step"][];
            /** @example ITEM_INTAKE */
            type: string;
            updated_at: string;
        };
        /**
         * @description Where a workflow is in its life.
         * @enum {string}
         */
        WorkflowStatus: "running" | "succeeded" | "failed" | "cancelled";
    };
    responses: never;
    parameters: never;
    requestBodies: never;
    headers: never;
    pathItems: never;
}
export type $defs = Record<string, never>;
export interface operations {
    list_audit: {
        parameters: {
            query?: {
                /** @description Rows caused by this user. */
                actor_user_id?: string;
                /** @description Rows of this collection (the caller must be a member; admins may name any). */
                collection_id?: string;
                /** @description Opaque cursor from a previous page. */
                cursor?: string;
                /** @description Needs `entity_type`. */
                entity_id?: string;
                /** @description `user`, `collection`, `membership`, `item`, `job` or `workflow`. */
                entity_type?: string;
                /** @description `occurred_at` at or after this instant (RFC 3339). */
                from?: string;
                /** @description 1–200, default 50. */
                limit?: number;
                /** @description `occurred_at` before this instant (RFC 3339). */
                to?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description a page of audit rows, newest first */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AuditPage"];
                };
            };
            /** @description invalid cursor, timestamp or filter */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description `collection_id` names a collection the caller is not a member of */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description limit out of range */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    public_key: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the node's public key */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PublicKeyResponse"];
                };
            };
            /** @description rate limited */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    verify_chain: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the verification report */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["VerifyReport"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description only admins may verify the chain */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    login: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["LoginRequest"];
            };
        };
        responses: {
            /** @description signed in */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AuthResponse"];
                };
            };
            /** @description wrong email or password (the same answer for both) */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description too many attempts for this address or account */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    logout: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["RefreshRequest"];
            };
        };
        responses: {
            /** @description signed out */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    me: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the caller */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["User"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    refresh: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["RefreshRequest"];
            };
        };
        responses: {
            /** @description new access and refresh tokens */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AuthResponse"];
                };
            };
            /** @description unknown, expired, revoked or reused refresh token */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    register: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["RegisterRequest"];
            };
        };
        responses: {
            /** @description registered and signed in */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["AuthResponse"];
                };
            };
            /** @description email already registered */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description invalid email, password or display name */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description too many attempts from this address */
            429: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    list_tokens: {
        parameters: {
            query?: {
                cursor?: string;
                /** @description 1–200, default 50. */
                limit?: number;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description tokens, oldest first */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PersonalTokenPage"];
                };
            };
            /** @description invalid cursor */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    create_token: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CreateTokenRequest"];
            };
        };
        responses: {
            /** @description created; `token` is shown only now */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["PersonalToken"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description invalid name or lifetime */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    delete_token: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description revoked */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such token of the caller */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    list_collections: {
        parameters: {
            query?: {
                /** @description Opaque cursor from a previous page's `next_cursor`. */
                cursor?: string;
                /** @description 1–200, default 50. */
                limit?: number;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description a page of the caller's collections */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["CollectionPage"];
                };
            };
            /** @description invalid cursor */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description limit out of range */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    create_collection: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CreateCollection"];
            };
        };
        responses: {
            /** @description created */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Collection"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description the explicit slug is taken */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description invalid name, slug or description */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    get_collection: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the collection */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Collection"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or the caller is not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    delete_collection: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description deleted */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not the owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or the caller is not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    update_collection: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["UpdateCollection"];
            };
        };
        responses: {
            /** @description updated */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Collection"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not the owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or the caller is not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description slug taken */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description invalid field */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    list_items: {
        parameters: {
            query?: {
                /** @description Opaque cursor from a previous page. */
                cursor?: string;
                /** @description 1–200, default 50. */
                limit?: number;
                /** @description asc (default) or desc. */
                order?: "asc" | "desc";
                /** @description created_at (default), updated_at or title. */
                sort?: "created_at" | "updated_at" | "title";
                /** @description Only items with this tag. */
                tag?: string;
            };
            header?: never;
            path: {
                /** @description collection id */
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description a page of items */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ItemPage"];
                };
            };
            /** @description invalid cursor or query */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or the caller is not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description limit out of range */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    create_item: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                /** @description collection id */
                id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CreateItem"];
            };
        };
        responses: {
            /** @description created; `ETag` holds the version */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Item"];
                };
            };
            /** @description malformed JSON */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description viewers may not write */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or the caller is not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description body too large */
            413: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a field is invalid; `details.field` names it */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    list_members: {
        parameters: {
            query?: {
                /** @description Opaque cursor from a previous page's `next_cursor`. */
                cursor?: string;
                /** @description 1–200, default 50. */
                limit?: number;
            };
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description a page of members */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["MemberPage"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or the caller is not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    add_member: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["AddMember"];
            };
        };
        responses: {
            /** @description added */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Member"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not the owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection (or not a member), or no such user */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description already a member */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description invalid role, or neither/both of email and user_id */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    remove_member: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
                user_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description removed */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not the owner, and not leaving */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection or member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description the last owner */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    update_member: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
                user_id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["UpdateMember"];
            };
        };
        responses: {
            /** @description updated */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Member"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not the owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection or member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description would leave the collection without an owner */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description invalid role */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    list_rules: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the collection's rules, by name */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["RuleList"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a member who is not an owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    create_rule: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        /** @description one rule */
        requestBody: {
            content: {
                /**
                 * @example {
                 *       "do": [
                 *         {
                 *           "add_tags": [
                 *             "rust"
                 *           ]
                 *         }
                 *       ],
                 *       "name": "tag-rust",
                 *       "on": [
                 *         "ItemCreated",
                 *         "ItemUpdated"
                 *       ],
                 *       "when": "event.data.title.lowerAscii().contains(\"rust\")"
                 *     }
                 */
                "application/json": Record<string, unknown>;
                /**
                 * @example name: tag-rust
                 *     on: [ItemCreated, ItemUpdated]
                 *     when: 'event.data.title.lowerAscii().contains("rust")'
                 *     do:
                 *       - add_tags: [rust]
                 */
                "application/yaml": string;
            };
        };
        responses: {
            /** @description the rule, version 1 */
            201: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StoredRule"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a member who is not an owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description the collection has a rule of that name */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description neither JSON nor YAML */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description an invalid rule: `details.errors` lists each problem with its line and column */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    get_rule: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
                rule_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the rule */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StoredRule"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a member who is not an owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection or rule */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    update_rule: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
                rule_id: string;
            };
            cookie?: never;
        };
        /** @description one rule */
        requestBody: {
            content: {
                "application/json": Record<string, unknown>;
                "application/yaml": string;
            };
        };
        responses: {
            /** @description the rule with its new version */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["StoredRule"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a member who is not an owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection or rule */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description another rule of the collection has that name */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description neither JSON nor YAML */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description an invalid rule, with each problem's line and column */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    delete_rule: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
                rule_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description deleted */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a member who is not an owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection or rule */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    rule_versions: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
                rule_id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the versions: created, updated …, deleted */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["VersionList"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a member who is not an owner */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection or rule */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    list_tags: {
        parameters: {
            query?: {
                cursor?: string;
                /** @description 1–200, default 50. */
                limit?: number;
            };
            header?: never;
            path: {
                /** @description collection id */
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description a page of tags */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["TagPage"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or the caller is not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    stream: {
        parameters: {
            query?: {
                /** @description For clients that cannot set headers (EventSource): the access token. */
                access_token?: string;
                /** @description Resume after this event sequence (like `Last-Event-ID`). */
                since?: number;
            };
            header?: {
                /** @description resume after this sequence */
                "Last-Event-ID"?: string | null;
            };
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description an endless `text/event-stream` */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "text/event-stream": string;
                };
            };
            /** @description malformed Last-Event-ID */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    websocket: {
        parameters: {
            query?: {
                /** @description For clients that cannot set headers (EventSource): the access token. */
                access_token?: string;
                /** @description Resume after this event sequence (like `Last-Event-ID`). */
                since?: number;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description switching to WebSocket */
            101: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    get_item: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the item; `ETag` holds its version */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Item"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such item, or the caller is not a member of its collection */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    delete_item: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description deleted */
            204: {
                headers: {
                    [name: string]: unknown;
                };
                content?: never;
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description viewers may not write */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such item, or the caller is not a member of its collection */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    update_item: {
        parameters: {
            query?: never;
            header?: {
                /** @description expected version, e.g. "3" */
                "If-Match"?: string | null;
            };
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["UpdateItem"];
            };
        };
        responses: {
            /** @description updated; `ETag` holds the new version */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Item"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description viewers may not write */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such item, or the caller is not a member of its collection */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description the item is at another version */
            412: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a field is invalid */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    list_jobs: {
        parameters: {
            query?: {
                /** @description Opaque cursor from a previous page. */
                cursor?: string;
                /** @description 1–200, default 50. */
                limit?: number;
                /** @description queued, running, succeeded, failed, dead or cancelled. */
                status?: string;
                /** @description A job type, e.g. ENRICH_URL. */
                type?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description a page of jobs */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["JobPage"];
                };
            };
            /** @description invalid cursor */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description unknown status or limit out of range */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    create_job: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["CreateJob"];
            };
        };
        responses: {
            /** @description an existing job: the same idempotency key and payload were sent before */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Job"];
                };
            };
            /** @description enqueued; `Location` names the job */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Job"];
                };
            };
            /** @description malformed JSON */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a viewer of the item's collection, or an administrators' job type */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such item, or the caller is not a member of its collection */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description the idempotency key was used with another payload */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description unknown type, invalid payload, max_attempts or run_at; `details.field` names it */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    get_job: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the job */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Job"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such job, or not visible to the caller */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    cancel_job: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the job, cancelled or with `cancel_requested` */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Job"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a viewer of the job's collection */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such job, or not visible to the caller */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description the job already finished */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    retry_job: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the job, queued again */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Job"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a viewer of the job's collection */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such job, or not visible to the caller */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description the job is not dead */
            409: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    test_rules: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["TestRequest"];
            };
        };
        responses: {
            /** @description the actions the rules would take */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "actions": [
                     *         {
                     *           "action": "add_tags",
                     *           "args": [
                     *             "rust"
                     *           ],
                     *           "rule": "tag-rust"
                     *         }
                     *       ]
                     *     }
                     */
                    "application/json": components["schemas"]["TestResult"];
                };
            };
            /** @description malformed JSON */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description invalid rules (each problem with its line and column) or an event without `type` */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    validate: {
        parameters: {
            query?: {
                /**
                 * @description Check as this collection's rule (only item jobs and workflows, only
                 *     the allowed webhook secrets); needs the rules permission there.
                 */
                collection_id?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        /** @description one rule or a list */
        requestBody: {
            content: {
                "application/json": Record<string, unknown>;
                /**
                 * @example - name: tag-rust
                 *       on: [ItemCreated]
                 *       whn: 'true'
                 *       do: [{add_tags: [rust]}]
                 */
                "application/yaml": string;
            };
        };
        responses: {
            /** @description whether the rules are valid, and each problem with its line and column */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    /**
                     * @example {
                     *       "errors": [
                     *         {
                     *           "column": 3,
                     *           "line": 3,
                     *           "message": "unknown field `whn`, expected one of `name`, `on`, `when`, `do`, `enabled`, `priority`, `description`"
                     *         }
                     *       ],
                     *       "valid": false
                     *     }
                     */
                    "application/json": components["schemas"]["Validation"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description checking as a collection's rule without the permission */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description neither JSON nor YAML */
            415: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    search_items: {
        parameters: {
            query?: {
                /** @description Only this collection (the caller must be a member, else 404). */
                collection_id?: string;
                /** @description Opaque cursor from a previous page. */
                cursor?: string;
                /** @description 1–200, default 50. */
                limit?: number;
                /** @description asc or desc; default desc, asc for title. */
                order?: "asc" | "desc";
                /**
                 * @description Words, "phrases", -exclusions; the last word also matches as a prefix
                 *     unless the query ends with a space. Empty: every item (filtered).
                 */
                q?: string;
                /** @description relevance (default), created_at, updated_at or title. */
                sort?: "relevance" | "created_at" | "updated_at" | "title";
                /** @description Comma-separated: items having all of these tags. */
                tags?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description a page of matching items, best first unless sorted otherwise */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["SearchPage"];
                };
            };
            /** @description invalid cursor, or q too long */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description collection_id names a collection the caller is not a member of */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description limit out of range, or an invalid tag */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description this node's index is being built */
            503: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    list_deliveries: {
        parameters: {
            query?: {
                /** @description Deliveries of this collection (owners); without it, all (administrators). */
                collection_id?: string;
                cursor?: string;
                limit?: number;
                /** @description delivered, failed, refused, retrying or dead. */
                outcome?: string;
            };
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description a page of delivery attempts */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["DeliveryPage"];
                };
            };
            /** @description invalid cursor */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not an owner of the collection; or no collection and not an administrator */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such collection, or not a member */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description unknown outcome or limit out of range */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    start_workflow: {
        parameters: {
            query?: never;
            header?: never;
            path?: never;
            cookie?: never;
        };
        requestBody: {
            content: {
                "application/json": components["schemas"]["StartWorkflow"];
            };
        };
        responses: {
            /** @description started; `Location` names the workflow */
            202: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Workflow"];
                };
            };
            /** @description malformed JSON */
            400: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description a viewer of the item's collection, or HEALTH_CHECK by a non-administrator */
            403: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such item, or the caller is not a member of its collection */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description unknown type or invalid input */
            422: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
    get_workflow: {
        parameters: {
            query?: never;
            header?: never;
            path: {
                id: string;
            };
            cookie?: never;
        };
        requestBody?: never;
        responses: {
            /** @description the workflow */
            200: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["Workflow"];
                };
            };
            /** @description not signed in */
            401: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
            /** @description no such workflow, or not visible to the caller */
            404: {
                headers: {
                    [name: string]: unknown;
                };
                content: {
                    "application/json": components["schemas"]["ErrorBody"];
                };
            };
        };
    };
}
