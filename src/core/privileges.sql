-- ---- last: nothing to PUBLIC ---------------------------------------------------------------------
-- Each module grants its functions to conveyor_reader < conveyor_worker < conveyor_admin beside their
-- declarations; CREATE FUNCTION grants EXECUTE to PUBLIC, which this takes back from every function of
-- the schema (test/pgtap/privileges_map.sql checks the resulting map).
DO $privileges$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'conveyor'::regnamespace LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$privileges$;
GRANT SELECT ON ALL TABLES IN SCHEMA conveyor TO conveyor_admin;
