\echo Use "CREATE EXTENSION conveyor_fuzz" to load this file. \quit

-- Runs libFuzzer (LLVMFuzzerRunDriver) in this backend with the given command line (libFuzzer's
-- flags, corpus directories, or input files to replay), its output appended to `output` (NULL: the
-- server log). libFuzzer ends the backend when it is done: the call never returns a value.
-- Needs a server started with the ASan runtime preloaded (run.sh does that). Granted to no one.
CREATE FUNCTION run(args text[], output text DEFAULT NULL) RETURNS int
    LANGUAGE C VOLATILE
    AS 'MODULE_PATHNAME', 'conveyor_fuzz_run';
REVOKE ALL ON FUNCTION run(text[], text) FROM PUBLIC;

-- The upsert target of the fuzzer's upsert calls: a composite key, a generated column, a jsonb, a
-- numeric, a boolean, an array and the two timestamps upsert treats specially.
CREATE TABLE target (
    id int NOT NULL,
    k text NOT NULL,
    v jsonb,
    n numeric,
    flag boolean DEFAULT false,
    tags text[],
    g int GENERATED ALWAYS AS (id * 2) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz,
    PRIMARY KEY (id, k)
);
INSERT INTO target (id, k, v, n) VALUES (1, 'a', '{"x": 1}', 1.5), (2, 'b', NULL, NULL);
