-- What an API token may do: `read` (GET only), `operate` (requests, downlinks, campaigns) or
-- `admin` (also users, tokens, settings). Tokens made before scopes existed could do
-- everything, so they keep doing so.
ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'
    CHECK (scope IN ('read', 'operate', 'admin'));
