-- conveyor upgrade script, 0.2 to 0.3 (ALTER EXTENSION conveyor UPDATE TO '0.3').
-- Hand-written: the Makefile does not build it and does not expand the @DEFINER@-style tokens of the
-- module sources, so every attribute is written out here as the 0.3 install script has it. An
-- upgraded database ends with exactly the catalog of a fresh 0.3 install (test/shell/upgrade.sh
-- compares them).
--
-- What 0.3 adds: what the example applications need from the core. The queue: job listing, long-term
-- job statistics, operator actions (requeue, requeue_stuck, reschedule, a retry that keeps the
-- attempt count), dead letters with their details and their own retention, payload schemas and queue
-- metadata, progress, custom trail events and status notifications. Upserts: on_duplicate, returning,
-- mode and on_error. Snapshots: snapshot_top. As for a fresh install: REVOKE ALL ... FROM PUBLIC for
-- each new function, then its GRANTs; new tables passed to pg_extension_config_dump and readable by
-- conveyor_admin.
\echo Use "ALTER EXTENSION conveyor UPDATE TO '0.3'" to load this file. \quit

-- ===================================================================================================
-- Queue: listing jobs and long-term job statistics
-- ===================================================================================================

-- ===================================================================================================
-- Queue: operator actions and dead letters
-- ===================================================================================================

-- ===================================================================================================
-- Queue: payload schemas and queue metadata
-- ===================================================================================================

-- ===================================================================================================
-- Queue: progress, custom trail events and status notifications
-- ===================================================================================================

-- ===================================================================================================
-- Upserts: on_duplicate, returning, mode, on_error
-- ===================================================================================================

-- ===================================================================================================
-- Snapshots: snapshot_top
-- ===================================================================================================
