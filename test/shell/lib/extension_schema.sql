-- The catalog of the extension conveyor, without OIDs, one "object: fact" line per fact, in a stable
-- order: what an updated database and a fresh install of the same version must agree on. Covers every
-- member the extension records (pg_depend deptype 'e') and what hangs off them. Used by
-- test/shell/upgrade.sh; run with psql -At.
WITH ext AS (SELECT e.* FROM pg_extension e WHERE e.extname = 'conveyor'),
members AS (
    SELECT d.classid, d.objid, d.objsubid FROM pg_depend d JOIN ext ON d.refobjid = ext.oid
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'),
rels AS (
    SELECT c.oid::regclass::text AS name, c.* FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid),
funcs AS (
    SELECT p.oid::regprocedure::text AS name, p.* FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid),
types AS (
    SELECT t.oid::regtype::text AS name, t.* FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid),
facts(object, fact) AS (
    SELECT 'extension', format('version %s, relocatable %s, schema %s', extversion, extrelocatable, extnamespace::regnamespace) FROM ext
    UNION ALL
    SELECT 'extension', format('config dump of %s, condition %L', u.rel::regclass, u.cond)
    FROM ext, unnest(ext.extconfig, ext.extcondition) AS u(rel, cond)
    UNION ALL
    SELECT 'member', pg_describe_object(classid, objid, objsubid) FROM members
    UNION ALL
    SELECT 'member', 'initial privileges of ' || pg_describe_object(i.classoid, i.objoid, i.objsubid) || ': ' || i.privtype::text || ' ' || i.initprivs::text
    FROM pg_init_privs i JOIN members m ON m.classid = i.classoid AND m.objid = i.objoid
    UNION ALL
    -- schemas
    SELECT 'schema ' || n.nspname, format('owner %s, acl %s, comment %L', pg_get_userbyid(n.nspowner), n.nspacl,
                                          obj_description(n.oid, 'pg_namespace'))
    FROM pg_namespace n JOIN members m ON m.classid = 'pg_namespace'::regclass AND m.objid = n.oid
    UNION ALL
    -- functions: the whole definition (language, volatility, strictness, SECURITY DEFINER, SET clauses,
    -- body or symbol), owner, ACL, comment
    SELECT 'function ' || f.name, pg_get_functiondef(f.oid) FROM funcs f WHERE f.prokind <> 'a'
    UNION ALL
    SELECT 'function ' || f.name, format('owner %s, acl %s, comment %L', pg_get_userbyid(f.proowner), f.proacl,
                                         obj_description(f.oid, 'pg_proc'))
    FROM funcs f
    UNION ALL
    -- types and domains, with their constraints
    SELECT 'type ' || t.name, format('type %s, base %s, not null %s, default %s, owner %s, acl %s, comment %L', t.typtype,
                                     format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
                                     pg_get_userbyid(t.typowner), t.typacl, obj_description(t.oid, 'pg_type'))
    FROM types t
    UNION ALL
    SELECT 'type ' || t.name, format('constraint %s %s', c.conname, pg_get_constraintdef(c.oid))
    FROM types t JOIN pg_constraint c ON c.contypid = t.oid
    UNION ALL
    SELECT 'type ' || t.name, 'label ' || e.enumsortorder::text || ' ' || e.enumlabel::text FROM types t JOIN pg_enum e ON e.enumtypid = t.oid
    UNION ALL
    -- relations: tables, partitioned tables, sequences, views
    SELECT 'relation ' || r.name, format('kind %s, persistence %s, options %s, owner %s, acl %s, row security %s/%s, comment %L',
                                         r.relkind, r.relpersistence, r.reloptions, pg_get_userbyid(r.relowner), r.relacl,
                                         r.relrowsecurity, r.relforcerowsecurity, obj_description(r.oid, 'pg_class'))
    FROM rels r
    UNION ALL
    SELECT 'relation ' || r.name, 'partitioned by ' || pg_get_partkeydef(r.oid) FROM rels r WHERE r.relkind = 'p'
    UNION ALL
    SELECT 'relation ' || r.name, format('partition of %s %s', i.inhparent::regclass, pg_get_expr(r.relpartbound, r.oid))
    FROM rels r JOIN pg_inherits i ON i.inhrelid = r.oid
    UNION ALL
    -- columns in their order (dropped ones skipped)
    SELECT 'relation ' || r.name, format('column %s %s %s, not null %s, default %s, identity %L, generated %L, collation %s, acl %s, comment %L',
               row_number() OVER (PARTITION BY r.oid ORDER BY a.attnum), a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
               CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END, a.attacl,
               col_description(r.oid, a.attnum))
    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = r.oid AND d.adnum = a.attnum
    WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f')
    UNION ALL
    SELECT 'relation ' || r.name, format('constraint %s %s, comment %L', c.conname, pg_get_constraintdef(c.oid),
                                         obj_description(c.oid, 'pg_constraint'))
    FROM rels r JOIN pg_constraint c ON c.conrelid = r.oid
    UNION ALL
    SELECT 'relation ' || r.name, format('index %s, comment %L', pg_get_indexdef(x.indexrelid), obj_description(x.indexrelid, 'pg_class'))
    FROM rels r JOIN pg_index x ON x.indrelid = r.oid
    UNION ALL
    SELECT 'relation ' || r.name, format('trigger %s, enabled %s, comment %L', pg_get_triggerdef(t.oid), t.tgenabled,
                                         obj_description(t.oid, 'pg_trigger'))
    FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT 'relation ' || r.name, format('policy %s %s %s to %s using %s check %s', p.polname, p.polcmd, p.polpermissive,
                                         p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
    FROM rels r JOIN pg_policy p ON p.polrelid = r.oid
    UNION ALL
    SELECT 'relation ' || r.name, format('rule %s', pg_get_ruledef(w.oid)) FROM rels r JOIN pg_rewrite w ON w.ev_class = r.oid
    UNION ALL
    SELECT 'relation ' || r.name, format('sequence %s start %s increment %s min %s max %s cache %s cycle %s',
                                         s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
    FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
    UNION ALL
    SELECT 'relation ' || r.name, format('owned by %s (%s)', pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid), d.deptype)
    FROM rels r JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.deptype IN ('a', 'i')
         AND d.refclassid = 'pg_class'::regclass AND r.relkind = 'S'
    UNION ALL
    SELECT 'relation ' || r.name, 'view ' || pg_get_viewdef(r.oid) FROM rels r WHERE r.relkind IN ('v', 'm')
)
SELECT object || ': ' || fact FROM facts ORDER BY object COLLATE "C", fact COLLATE "C";
