#!/usr/bin/env bash
# pg_dump / pg_restore of what upserts and snapshots keep in conveyor's tables: the audit trail
# (change_log and its identity sequence), the idempotency keys of operation ids, and the snapshot
# series. After a restore into a fresh database they are all there, new changes continue the trail's
# numbering, and the next capture's delta is computed against the restored series.
source "$(dirname "$0")/lib/tap.bash"

SRC=conveyor_shell_upsert_dump_src
DST=conveyor_shell_upsert_dump_dst
use_scratch upsert-dump
chmod 755 "$TMP"

create_db "$SRC" || bail "could not create database $SRC"
q "$SRC" "CREATE TABLE channels (channel_id text PRIMARY KEY, title text NOT NULL, subscribers bigint)" \
    "SELECT count(*) FROM conveyor.upsert('channels', '[{\"channel_id\": \"UC1\", \"title\": \"One\", \"subscribers\": 10},
                                                       {\"channel_id\": \"UC2\", \"title\": \"Two\"}]', '{channel_id}',
                                          '{\"audit\": true, \"operation_id\": \"crawl-1\"}')" \
    "SELECT count(*) FROM conveyor.upsert('channels', '[{\"channel_id\": \"UC1\", \"title\": \"One\", \"subscribers\": 12}]',
                                          '{channel_id}', '{\"audit\": true}')" \
    "SELECT count(*) FROM conveyor.snapshot('channel_stats', 'UC1', '{\"subscribers\": 10}', '2026-03-01 10:00+00')" \
    "SELECT count(*) FROM conveyor.snapshot('channel_stats', 'UC1', '{\"subscribers\": 12}', '2026-03-02 10:00+00')" \
    >/dev/null || bail "could not fill $SRC"

dump_and_restore "$SRC" "$DST"

TRAIL="SELECT string_agg(change_id || ':' || (key->>'channel_id') || ':' || action || ':' || coalesce(operation_id, '-'), ' ' ORDER BY change_id)
       FROM conveyor.change_log"
is "$(q "$DST" "$TRAIL")" "$(q "$SRC" "$TRAIL")" "change_log is restored as it was"
is "$(q "$DST" "$TRAIL")" "1:UC1:inserted:crawl-1 2:UC2:inserted:crawl-1 3:UC1:updated:-" "... with its three changes"
KEYS="SELECT string_agg(state || ':' || (result->>'inserted'), ' ') FROM conveyor.idempotency_keys WHERE scope = 'upsert'"
is "$(q "$DST" "$KEYS")" "completed:2" "the operation id's key and stored result are restored"
SERIES="SELECT string_agg(period_start || ':' || metrics::text || ':' || coalesce(delta::text, '-'), ' ' ORDER BY period_start)
        FROM conveyor.snapshot_series('channel_stats', 'UC1')"
is "$(q "$DST" "$SERIES")" "$(q "$SRC" "$SERIES")" "the snapshot series is restored as it was"

is "$(q "$DST" "SELECT string_agg(action, ',') FROM conveyor.upsert('channels',
          '[{\"channel_id\": \"UC2\", \"title\": \"Two!\"}, {\"channel_id\": \"UC3\", \"title\": \"Three\"}]', '{channel_id}',
          '{\"audit\": true}')")" "updated,inserted" "upserts work on the restored tables"
is "$(q "$DST" "SELECT string_agg(change_id::text, ',' ORDER BY change_id) FROM conveyor.change_log WHERE change_id > 3")" "4,5" \
   "and the audit trail continues its numbering"
is "$(q "$DST" "SELECT delta::text FROM conveyor.snapshot('channel_stats', 'UC1', '{\"subscribers\": 15}', '2026-03-03 10:00+00')")" \
   '{"subscribers": 3}' "the next capture's delta is against the restored series"

finish
