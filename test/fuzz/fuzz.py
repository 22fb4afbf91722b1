#!/usr/bin/python3
"""SQL-level fuzzer for conveyor. See test/fuzz/README.md.

Calls every function of extension conveyor (found in the catalog) with adversarial arguments, as
every kind of role, from sessions whose search_path puts a look-alike schema ahead of pg_catalog, with
stateful sequences of valid calls (one argument mutated) and hostile upsert targets. After each batch
it checks that the health calls still work. Prints TAP lines, one per failure class, a reproducer per
distinct failure and a summary; exits 1 on any failure.
"""
import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict

import psycopg
from psycopg.types.string import TextLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile  # noqa: E402
import values  # noqa: E402
from values import Gen, INT_EDGES, NAMED  # noqa: E402

CLASSES = ['crash', 'internal', 'timeout', 'escalation', 'poisoned', 'encoding', 'limit']
CLASS_TITLES = {
    'crash': 'no backend crash (connection lost, postmaster restart, "terminated by signal")',
    'internal': 'no internal error (SQLSTATE XX000, XX001, XX002)',
    'timeout': 'no statement past its timeout (57014)',
    'escalation': 'no caller code running as another role (look-alike operators and functions)',
    'poisoned': 'no poisoned state (health calls keep working after every batch)',
    'encoding': 'no error message invalid in the client encoding (22021 in a LATIN1 session)',
    'limit': 'no over-long value reaching an index (54000 "index row size"): keys are refused at input',
}
OMIT = object()
STATEMENT_TIMEOUT = '10s'
LOCK_TIMEOUT = '5s'


def log(msg=''):
    for line in str(msg).splitlines() or ['']:
        print('# ' + line, flush=True)


def sql_literal(v, limit=300):
    """v as an SQL literal for a reproducer; long values are shortened (a run of one character is
    shown as repeat(), anything else cut with its length noted)."""
    if v is None:
        return 'NULL'
    if len(v) > 40 and v == v[0] * len(v):
        return f"repeat({sql_literal(v[0])}, {len(v)})"
    m = re.fullmatch(r'(.)\1{39,}(.*)', v, re.S)
    if m and len(m.group(2)) < 40:
        n = len(v) - len(m.group(2))
        return f"repeat({sql_literal(m.group(1))}, {n}) || {sql_literal(m.group(2))}"
    cut = ''
    if len(v) > limit:
        cut = f'/* {len(v)} characters, cut */ '
        v = v[:limit] + '...'
    return cut + "'" + v.replace("'", "''") + "'"


class Proc:
    def __init__(self, row):
        self.oid, self.name, self.names, self.types, self.ndefaults, self.signature = row
        self.names = [n or f'${i + 1}' for i, n in enumerate(self.names)]
        self.nrequired = len(self.types) - self.ndefaults


class Call:
    def __init__(self, role, proc, args, named, latin1, origin):
        self.role, self.proc, self.args, self.named, self.latin1, self.origin = role, proc, args, named, latin1, origin
        self.index = 0

    def parts(self):
        """[(name, type, value)] of the arguments actually passed."""
        if self.named:
            return [(n, t, v) for n, t, v in self.args if v is not OMIT]
        last = max([i for i, (_, _, v) in enumerate(self.args) if v is not OMIT] + [self.proc.nrequired - 1])
        out = []
        for n, t, v in self.args[:last + 1]:
            out.append((n, t, None if v is OMIT else v))
        return out

    def sql(self):
        """(SQL with placeholders, params)."""
        pieces, params = [], []
        for n, t, v in self.parts():
            if v is not None and self.latin1 and not encodable_latin1(v):
                ph = "pg_catalog.convert_from(pg_catalog.decode(%s, 'hex'), 'UTF8')"
                params.append(v.encode('utf-8').hex())
            else:
                ph = '%s'
                params.append(v)
            piece = f'{ph}::{t}'
            pieces.append(f'"{n}" => {piece}' if self.named else piece)
        return f'SELECT * FROM conveyor."{self.proc.name}"({", ".join(pieces)})', params

    def literal_sql(self):
        pieces = []
        for n, t, v in self.parts():
            piece = f'{sql_literal(v)}::{t}'
            pieces.append(f'"{n}" => {piece}' if self.named else piece)
        return f'SELECT * FROM conveyor."{self.proc.name}"({", ".join(pieces)});'

    def describe(self, seed):
        return (f'seed {seed}, call #{self.index} ({self.origin}); as role {self.role} '
                f'(psql -U {self.role}), client_encoding {"LATIN1" if self.latin1 else "UTF8"}\n'
                f'  SET search_path = {hostile.SEARCH_PATH};'
                f'{" SET client_encoding = LATIN1;" if self.latin1 else ""}\n  {self.literal_sql()}')


def encodable_latin1(s):
    try:
        s.encode('latin-1')
        return True
    except UnicodeEncodeError:
        return False


class Lost(Exception):
    """The connection went away under a call."""


class Fuzzer:
    def __init__(self, opts):
        self.o = opts
        self.seed = opts.seed
        self.rng = random.Random(opts.seed)
        self.gen = Gen(self.rng)
        self.conninfo = dict(dbname=opts.db)
        self.conns = {}
        self.notices = []
        self.failures = defaultdict(list)     # class -> [(signature, text)]
        self.signatures = Counter()
        self.states = Counter()
        self.calls = 0
        self.crashes = 0
        self.resets = 0
        self.batch_calls = []
        self.crash_counts = Counter()
        self.client_errors = Counter()
        self.log_offset = opts.server_log_offset
        self.reset_state()

    # ---- connections ------------------------------------------------------------------------------
    def connect(self, user, fuzz_session=True, latin1=False, retries=240):
        last = None
        for _ in range(retries):   # the server may be restarting after a crash: retry the whole setup
            try:
                return self.try_connect(user, fuzz_session, latin1)
            except psycopg.OperationalError as e:
                last = e
                time.sleep(0.5)
        raise SystemExit(f'cannot connect as {user}: {last}')

    def try_connect(self, user, fuzz_session, latin1):
        c = psycopg.connect(**self.conninfo, user=user, autocommit=True, prepare_threshold=None)
        c.add_notice_handler(lambda d: self.notices.append(d.message_primary or ''))
        # Results as text in the connection's encoding: psycopg's JSON loader decodes UTF-8 whatever
        # the client encoding, and Python's datetime cannot hold 'infinity' or 4713 BC; either would be
        # a client-side false alarm.
        for t in ('json', 'jsonb', 'timestamptz', 'timestamp', 'date', 'numeric', 'interval'):
            c.adapters.register_loader(t, TextLoader)
        c.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'")
        c.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
        c.execute("SET idle_in_transaction_session_timeout = '60s'")
        if fuzz_session:
            c.execute(f'SET search_path = {hostile.SEARCH_PATH}')
            c.execute('SET client_min_messages = notice')
            if latin1:
                c.execute("SET client_encoding = 'LATIN1'")
        return c

    def session(self, role, latin1=False):
        key = (role, latin1)
        c = self.conns.get(key)
        if c is None or c.closed or c.broken:
            c = self.conns[key] = self.connect(role, latin1=latin1)
        return c

    def control(self):
        c = self.conns.get('control')
        if c is None or c.closed or c.broken:
            c = self.conns['control'] = self.connect(self.o.superuser, fuzz_session=False)
        return c

    def health_conn(self):
        c = self.conns.get('health')
        if c is None or c.closed or c.broken:
            c = self.conns['health'] = self.connect(hostile.role_name('admin'), fuzz_session=False)
        return c

    def close_all(self):
        for c in self.conns.values():
            try:
                c.close()
            except Exception:
                pass
        self.conns = {}

    def postmaster_start(self):
        return self.control().execute('SELECT pg_postmaster_start_time()').fetchone()[0]

    # ---- setup --------------------------------------------------------------------------------------
    def setup(self):
        ctl = self.control()
        for stmt in hostile.cluster_sql():
            ctl.execute(stmt)
        result_types = {}
        for op, l, r in hostile.SPY_OPERATORS:
            row = ctl.execute("""SELECT format_type(oprresult, NULL) FROM pg_operator
                                 WHERE oprname = %s AND oprleft = %s::regtype AND oprright = %s::regtype
                                   AND oprnamespace = 'pg_catalog'::regnamespace""", (op, l, r)).fetchone()
            if row:
                result_types[(op, l, r)] = row[0]
        w = self.connect(hostile.role_name('worker'), fuzz_session=False)
        for stmt in hostile.spy_sql(result_types):
            w.execute(stmt)
        w.close()
        self.tables = {}
        for suffix, _ in hostile.ROLES:
            role = hostile.role_name(suffix)
            c = self.connect(role, fuzz_session=False)
            c.execute('SET client_min_messages = warning')
            for stmt in hostile.hostile_sql(suffix):
                c.execute(stmt)
            c.close()
            self.tables[role] = hostile.hostile_tables(suffix)
        self.roles = [hostile.role_name(s) for s, _ in hostile.ROLES]
        self.load_procs()
        self.start_time = self.postmaster_start()
        self.spy_seen = ctl.execute('SELECT coalesce(max(id), 0) FROM fuzzlog.spy').fetchone()[0]

    def load_procs(self):
        ctl = self.control()
        rows = ctl.execute("""
            SELECT p.oid, p.proname,
                   coalesce(p.proargnames[1:p.pronargs], array_fill(NULL::text, ARRAY[p.pronargs])),
                   ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, i)
                         ORDER BY i),
                   p.pronargdefaults, p.oid::regprocedure::text
            FROM pg_proc p
            JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
            JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'conveyor'
            WHERE p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
            ORDER BY p.proname, p.oid""").fetchall()
        self.procs = [Proc(r) for r in rows]
        self.by_name = defaultdict(list)
        for p in self.procs:
            self.by_name[p.name].append(p)
        self.can_exec = {}
        for p in self.procs:
            self.can_exec[p.oid] = [r for r in self.roles if ctl.execute(
                'SELECT has_function_privilege(%s, %s::oid, \'EXECUTE\')', (r, p.oid)).fetchone()[0]]
        if not getattr(self, 'listed', False):
            self.listed = True
            log(f'{len(self.procs)} functions of extension conveyor: ' + ', '.join(sorted(self.by_name)))

    def reset_state(self):
        self.st = dict(queues=[], jobs=[], leased=[], locks=[], accounts=[], reservations=[], quotas=[],
                       idem=[], series=[], entities=[], ratekeys=[])

    def reset_extension(self, why):
        """A poisoned state is reported once; then conveyor is installed afresh so the run goes on."""
        self.resets += 1
        log(f'resetting conveyor (DROP/CREATE EXTENSION) after: {why}')
        self.close_all()
        ctl = self.control()
        ctl.execute('SET client_min_messages = warning')
        ctl.execute('DROP EXTENSION IF EXISTS conveyor CASCADE')
        ctl.execute('CREATE EXTENSION conveyor')
        self.close_all()
        self.load_procs()
        self.reset_state()

    # ---- failures -----------------------------------------------------------------------------------
    def fail(self, cls, signature, text):
        key = (cls, signature)
        self.signatures[key] += 1
        if self.signatures[key] == 1:
            self.failures[cls].append((signature, text))
            log(f'FAILURE [{cls}] {signature}')
            for line in text.splitlines():
                log('    ' + line)

    @staticmethod
    def norm(msg):
        msg = re.sub(r'"[^"]*"', '"…"', msg or '')
        msg = re.sub(r'\d+', 'N', msg)
        return msg[:120]

    # ---- one call -----------------------------------------------------------------------------------
    def execute(self, call):
        self.calls += 1
        call.index = self.calls
        self.batch_calls.append(call)
        conn = self.session(call.role, call.latin1)
        query, params = call.sql()
        self.notices.clear()
        state, rows, msg = '00000', [], ''
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                if cur.description is not None:
                    rows = cur.fetchall()
                    cols = [d.name for d in cur.description]
                    rows = [dict(zip(cols, r)) for r in rows]
            try:
                conn.execute('SELECT pg_advisory_unlock_all()')   # no session lock outlives its call
            except psycopg.Error:
                pass
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            if e.sqlstate and not conn.broken:
                state, msg = e.sqlstate, e.diag.message_primary or str(e)
            else:
                self.lost(call, e)
                return 'lost', []
        except psycopg.Error as e:
            state, msg = e.sqlstate or 'client', (e.diag.message_primary if e.sqlstate else str(e)) or str(e)
            if state == 'client':     # refused by psycopg before it reached the server (e.g. a NUL in text)
                self.client_errors[self.norm(msg)[:60]] += 1
        except UnicodeError as e:     # a message the client could not decode
            state, msg = 'unicode', str(e)
        self.states[state] += 1
        call.outcome = (state, msg)
        self.spy_notices(call)
        if state in ('XX000', 'XX001', 'XX002'):
            self.fail('internal', f'{call.proc.name}: {state} {self.norm(msg)}',
                      f'{state}: {msg[:500]}\n{call.describe(self.seed)}')
        elif state == '57014':
            self.fail('timeout', f'{call.proc.name}: 57014 {self.norm(msg)}',
                      f'past statement_timeout {STATEMENT_TIMEOUT}: {msg[:300]}\n{call.describe(self.seed)}')
        elif state == '22021' and call.latin1 or state == 'unicode':
            self.fail('encoding', f'{call.proc.name}: {state} {self.norm(msg)}',
                      f'{state}: {msg[:300]}\n{call.describe(self.seed)}')
        elif state == '54000' and 'index row' in msg:
            self.fail('limit', f'{call.proc.name}: 54000 {self.norm(msg)}',
                      f'{state}: {msg[:300]}\n{call.describe(self.seed)}')
        return state, rows

    def spy_notices(self, call):
        for n in self.notices:
            if not n.startswith('CVFUZZ-SPY|'):
                continue
            _, cur, sess, what = (n.split('|', 3) + ['', '', ''])[:4]
            if cur != sess and sess != hostile.role_name('super'):
                self.fail('escalation', f'{call.proc.name}: {what} ran as {cur}',
                          f'{what} (planted by a caller in schema evil) ran with current_user {cur}, '
                          f'session_user {sess}\n{call.describe(self.seed)}')

    def new_log_lines(self):
        """Server log lines written since the last look (empty without --server-log)."""
        if not self.o.server_log or not os.path.exists(self.o.server_log):
            return []
        with open(self.o.server_log, 'rb') as f:
            f.seek(self.log_offset)
            data = f.read()
        self.log_offset += len(data)
        return data.decode('utf-8', 'replace').splitlines()

    def recover(self):
        """After a lost connection: wait until the server takes connections again (a crash makes the
        postmaster end every session and reinitialize); True if it restarted."""
        self.close_all()
        time.sleep(1.0)          # let the postmaster notice the dead backend before reconnecting
        for _ in range(240):
            try:
                c = self.try_connect(self.o.superuser, False, False)
                start = c.execute('SELECT pg_postmaster_start_time()').fetchone()[0]
                time.sleep(0.3)
                c.execute('SELECT 1')
                self.conns['control'] = c
                break
            except psycopg.OperationalError:
                time.sleep(0.5)
        else:
            raise SystemExit('the server did not come back after a lost connection')
        lines = self.new_log_lines()
        signals = [ln for ln in lines if 'terminated by signal' in ln or 'was terminated by exception' in ln]
        restarted = bool(signals) or start != self.start_time
        self.start_time = start
        return restarted, signals

    def lost(self, call, err):
        """The connection died under the call: find out whether the server crashed, recover, go on."""
        self.crashes += 1
        restarted, signals = self.recover()
        self.states['lost'] += 1
        first = call.args[0][2] if call.args else None
        self.crash_counts[f'{call.proc.name}:{first}'] += 1
        self.fail('crash', f'{call.proc.name}: connection lost' + (' (server crash and restart)' if restarted else ''),
                  f'{str(err).strip()[:300]}\nserver restarted: {restarted}; server log: '
                  f'{signals[0][:300] if signals else "-"}\n{call.describe(self.seed)}')
        self.reset_state_after_crash()

    def reset_state_after_crash(self):
        self.st['leased'] = []

    # ---- argument choice ----------------------------------------------------------------------------
    POOL_BY_NAME = {'queue': 'queues', 'account': 'accounts', 'name': 'quotas', 'series': 'series',
                    'job_id': 'jobs', 'job_ids': 'jobs', 'reservation_id': 'reservations'}

    def pool(self, name, typ, role):
        if typ == 'regclass':
            return self.tables.get(role, []) + sum(self.tables.values(), [])[:3]
        if name == 'key':
            return [k for k, _, _ in self.st['locks']] + self.st['idem'] + self.st['ratekeys']
        if name in ('entity_type', 'entity_id'):
            return [e[0 if name == 'entity_type' else 1] for e in self.st['entities']]
        if name == 'token':
            return [str(t) for _, _, t in self.st['locks']]
        if name in ('owner', 'worker_id'):
            return ['w1', 'w2', 'o1']
        return self.st.get(self.POOL_BY_NAME.get(name, ''), [])

    def plausible(self, name, typ, role):
        pool = self.pool(name, typ, role)
        if pool and self.gen.chance(0.7):
            return self.gen.pick(pool)
        if name in NAMED and self.gen.chance(0.6):
            return self.gen.pick(NAMED[name])
        if typ in INT_EDGES:
            return str(self.rng.randint(1, 100))
        return {'numeric': '1.5', 'jsonb': '{}', 'boolean': 'true', 'uuid': self.gen.uuid(),
                'timestamp with time zone': 'now', 'text[]': '{k}', 'uuid[]': '{}'}.get(typ, 'fz_' + self.gen.ident())

    def adversarial(self, name, typ, role):
        if typ in INT_EDGES and self.gen.chance(0.4):
            edges = INT_EDGES[typ]
            return self.gen.pick([edges[3], edges[4]])   # the type's min and max
        return self.gen.value(typ, name, self.pool(name, typ, role))

    def pick_role(self, proc):
        allowed = self.can_exec.get(proc.oid, [])
        if allowed and self.gen.chance(0.85):
            return self.gen.pick(allowed)
        return self.gen.pick(self.roles)

    def random_call(self):
        proc = self.gen.pick(self.procs)
        role = self.pick_role(proc)
        named = self.gen.chance(0.6)
        args = []
        for i, (n, t) in enumerate(zip(proc.names, proc.types)):
            has_default = i >= proc.nrequired
            r = self.rng.random()
            if has_default and r < 0.3:
                v = OMIT
            elif r < 0.55:
                v = self.plausible(n, t, role)
            else:
                v = self.adversarial(n, t, role)
            args.append((n, t, v))
        return Call(role, proc, args, named, self.gen.chance(0.2), 'random')

    # ---- stateful sequences -------------------------------------------------------------------------
    def template(self):
        g, st, rng = self.gen, self.st, self.rng
        qname = g.pick(st['queues']) if st['queues'] else 'fzq0'
        job = g.pick(st['jobs']) if st['jobs'] else g.uuid()
        acct = g.pick(st['accounts']) if st['accounts'] else 'acct0'
        choices = [
            (6, 'create_queue', ['admin', 'super'], lambda: dict(
                queue=f'fzq{rng.randrange(6)}',
                options=g.pick(['{}', '{"lease_seconds": 30}', '{"max_attempts": 2, "backoff_base_seconds": 0}',
                                '{"event_trail": "failures"}', '{"job_types": ["a", "b"]}',
                                '{"required_keys": ["id"]}', '{"retention_days": 0}']))),
            (12, 'enqueue', ['worker', 'admin'], lambda: dict(
                queue=qname, payload=f'{{"id": {rng.randrange(1000)}}}', job_type=g.pick([None, 'a', 'b']),
                group_key=g.pick([None, None, 'g1']), priority=str(rng.randint(0, 10)),
                run_at=g.pick(['now', 'now', '2000-01-01', '2100-01-01']),
                dedup_key=g.pick([None, None, f'd{rng.randrange(5)}']))),
            (4, 'enqueue_batch', ['worker', 'admin'], lambda: dict(
                queue=qname, jobs='[' + ','.join(g.pick(['{"payload": {"id": 1}}', '{"payload": {}, "priority": 3}',
                                                          '{"payload": {"id": 2}, "run_at": "2000-01-01T00:00:00Z"}',
                                                          '{"payload": {}, "dedup_key": "b1"}',
                                                          '{"payload": {"id": 3}, "run_at": "2030-01-01T00:00:00Z"}'])
                                                  for _ in range(rng.randint(1, 4))) + ']')),
            (10, 'dequeue', ['worker', 'admin'], lambda: dict(
                queue=qname, worker_id=g.pick(['w1', 'w2']), max_count=str(rng.randint(1, 5)),
                lease_seconds=g.pick([None, '30']))),
            (8, 'ack', ['worker', 'admin'], lambda: self.leased_args(dict(
                success=g.pick(['true', 'false']), error_message=g.pick([None, 'boom']),
                stats=g.pick([None, '{"items": 3}'])))),
            (2, 'heartbeat', ['worker'], lambda: self.leased_args(dict(extend_seconds=g.pick([None, '60'])))),
            (2, 'release', ['worker'], lambda: self.leased_args(dict(delay_seconds='0'))),
            (2, 'retry', ['admin'], lambda: dict(job_id=job, delay_seconds=g.pick([None, '0']))),
            (2, 'cancel', ['admin'], lambda: dict(job_id=job, reason='fuzz')),
            (1, 'dead_letter', ['admin'], lambda: dict(job_id=job, reason='fuzz')),
            (2, 'get_job', ['reader', 'worker'], lambda: dict(job_id=job)),
            (6, 'lock_acquire', ['worker', 'admin'], lambda: dict(
                key=f'lk{rng.randrange(4)}', owner=g.pick(['o1', 'o2']), ttl_seconds=g.pick(['60', '1']))),
            (3, 'lock_heartbeat', ['worker'], lambda: self.lock_args()),
            (3, 'lock_release', ['worker'], lambda: self.lock_args()),
            (2, 'lock_check', ['worker'], lambda: {k: v for k, v in self.lock_args().items() if k != 'owner'}),
            (4, 'account_create', ['admin', 'super'], lambda: dict(
                account=f'acct{rng.randrange(4)}', budget=g.pick([None, '100', '1000000']),
                hard_limit=g.pick(['true', 'false']))),
            (8, 'charge', ['worker', 'admin'], lambda: dict(
                account=acct, service=g.pick(['svc', 'api']), amount=g.pick(['1.5', '0.01', '10']),
                items=str(rng.randint(1, 5)), idempotency_key=g.pick([None, f'c{rng.randrange(5)}']))),
            (5, 'reserve', ['worker', 'admin'], lambda: dict(
                account=acct, amount=g.pick(['2', '5.5']), ttl_seconds=g.pick(['600', '1']))),
            (4, 'settle', ['worker', 'admin'], lambda: dict(
                reservation_id=g.pick(st['reservations']) if st['reservations'] else g.uuid(),
                actual=g.pick(['1', '2']), service='svc')),
            (2, 'release_reservation', ['worker'], lambda: dict(
                reservation_id=g.pick(st['reservations']) if st['reservations'] else g.uuid())),
            (5, 'quota_define', ['admin', 'super'], lambda: dict(
                name=f'qt{rng.randrange(4)}', quota_limit=g.pick(['1000', '10', '1000000']),
                period=g.pick(['day', 'hour', 'month']), reset_tz=g.pick(['UTC', 'Asia/Kathmandu']),
                costs=g.pick([None, '{"search": 100, "list": 1}']))),
            (7, 'quota_consume', ['worker', 'admin'], lambda: dict(
                name=g.pick(st['quotas']) if st['quotas'] else 'qt0', units=g.pick([None, '1', '50']),
                operation=g.pick([None, 'search']))),
            (3, 'idempotency_begin', ['worker'], lambda: dict(key=f'ik{rng.randrange(5)}', request='{"a": 1}')),
            (2, 'idempotency_finish', ['worker'], lambda: dict(key=f'ik{rng.randrange(5)}', result='{"ok": true}')),
            (4, 'snapshot', ['worker', 'admin'], lambda: dict(
                series=f's{rng.randrange(3)}', entity_id=f'e{rng.randrange(3)}',
                metrics=f'{{"views": {rng.randrange(10**6)}, "likes": {rng.randrange(100)}}}',
                captured_at=g.pick(['now', '2024-01-01 00:00:00+00']))),
            (3, 'entity_acquire', ['worker'], lambda: dict(entity_type='video', entity_id=f'v{rng.randrange(4)}',
                                                          timeout_seconds='60')),
            (2, 'entity_complete', ['worker'], lambda: dict(entity_type='video', entity_id=f'v{rng.randrange(4)}')),
            (2, 'rate_limit', ['worker'], lambda: dict(key=f'rk{rng.randrange(3)}', rate='10')),
            (2, 'maintain', ['admin'], lambda: dict()),
            (1, 'reap', ['admin'], lambda: dict(queue=qname)),
            (20, 'upsert', ['worker', 'admin'], None),
        ]
        total = sum(w for w, *_ in choices)
        r = rng.random() * total
        for w, fname, roles, build in choices:
            r -= w
            if r <= 0:
                break
        if fname == 'upsert':
            return self.upsert_call()
        suffix = g.pick(roles)
        args = build()
        return self.stateful_call(fname, hostile.role_name(suffix), args)

    def leased_args(self, extra):
        if self.st['leased']:
            job, worker = self.gen.pick(self.st['leased'])
        else:
            job, worker = self.gen.uuid(self.st['jobs']), 'w1'
        return dict(job_id=job, worker_id=worker, **extra)

    def lock_args(self):
        if self.st['locks']:
            key, owner, token = self.gen.pick(self.st['locks'])
            return dict(key=key, owner=owner, token=str(token))
        return dict(key='lk0', owner='o1', token='1')

    def stateful_call(self, fname, role, values, mutate=0.35):
        procs = self.by_name.get(fname)
        if not procs:
            return self.random_call()
        proc = procs[0]
        args = []
        for i, (n, t) in enumerate(zip(proc.names, proc.types)):
            v = values.get(n, OMIT)
            if v is OMIT and i < proc.nrequired:
                v = self.plausible(n, t, role)
            args.append((n, t, v))
        origin = f'sequence:{fname}'
        if args and self.gen.chance(mutate):
            # Values with structure or edges (times, numbers, JSON) are mutated more often than names.
            weights = [1 if t == 'text' else 2 for _, t, _ in args]
            i = self.rng.choices(range(len(args)), weights)[0]
            n, t, v = args[i]
            mutated = self.mutate_json(v) if t == 'jsonb' and v not in (None, OMIT) and self.gen.chance(0.5) else None
            if mutated is not None:
                args[i] = (n, t, mutated)
                origin += f' (a field of argument {n} mutated)'
            else:
                args[i] = (n, t, self.adversarial(n, t, role))
                origin += f' (argument {n} mutated)'
        return Call(role, proc, args, self.gen.chance(0.7), self.gen.chance(0.15), origin)

    JSON_FIELD_EDGES = ['infinity', '-infinity', '294276-12-31T23:59:59Z', '4713-01-01 BC', 'NaN', 'Infinity',
                        '', None, -1, 0, 2147483647, 2147483648, 9223372036854775807, -9223372036854775808,
                        1e308, -0.0, 99999999999999999999, True, [], {}, 'é' * 700, [None], {'': None}]

    def mutate_json(self, text):
        """The JSON text with one field of one object (anywhere in it) set to an edge value, or one
        field added; None when the text is not JSON with an object in it."""
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        objs = []

        def walk(x):
            if isinstance(x, dict):
                objs.append(x)
                for v in x.values():
                    walk(v)
            elif isinstance(x, list):
                for v in x:
                    walk(v)
        walk(doc)
        if not objs:
            return None
        o = self.gen.pick(objs)
        keys = list(o.keys())
        key = self.gen.pick(keys) if keys and self.gen.chance(0.7) else self.gen.pick(values.JSON_KEYS)
        o[key] = self.gen.pick(self.JSON_FIELD_EDGES)
        return json.dumps(o if doc is o else doc, ensure_ascii=self.gen.chance(0.5))

    def upsert_call(self):
        g, rng = self.gen, self.rng
        suffix = g.pick(['worker', 'worker', 'admin'])
        role = hostile.role_name(suffix)
        tables = self.tables[role] if g.chance(0.9) else self.tables[hostile.role_name('worker')]
        target = g.pick(tables)
        rows = []
        for _ in range(rng.randint(1, 3)):
            row = {'k': f'k{rng.randrange(4)}', 'v': rng.randint(0, 9)}
            if g.chance(0.3):
                row['j'] = {'n': rng.randrange(100)}
            rows.append(row)
        opts = g.pick([{}, {'audit': True}, {'operation_id': f'op{rng.randrange(50)}'},
                       {'audit': True, 'operation_id': f'op{rng.randrange(50)}'}, {'strict': True},
                       {'touch_columns': ['v']}, {'immutable_columns': ['j']}])
        fname = 'upsert' if g.chance(0.75) else 'upsert_counts'
        values = dict(target=target, rows=json.dumps(rows), key_columns='{k}', options=json.dumps(opts))
        call = self.stateful_call(fname, role, values, mutate=0.2)
        call.origin = call.origin.replace('sequence:', 'upsert:')
        if self.crash_counts[f'upsert:{target}'] + self.crash_counts[f'upsert_counts:{target}'] >= 2:
            return self.upsert_call()     # this target crashed the server twice: spend the time elsewhere
        return call

    def harvest(self, call, state, rows):
        """Remember what a successful stateful call made, for later calls."""
        if state != '00000':
            return
        name = call.proc.name
        a = {n: v for n, _, v in call.args}
        st = self.st

        def remember(lst, v, cap=40):
            if v is not None and v is not OMIT and v not in lst:
                lst.append(v)
                del lst[:-cap]
        if name == 'create_queue':
            remember(st['queues'], a.get('queue'))
        elif name == 'account_create':
            remember(st['accounts'], a.get('account'))
        elif name == 'quota_define':
            remember(st['quotas'], a.get('name'))
        elif name == 'snapshot':
            remember(st['series'], a.get('series'))
        elif name == 'idempotency_begin':
            remember(st['idem'], a.get('key'))
        elif name == 'rate_limit':
            remember(st['ratekeys'], a.get('key'))
        elif name == 'entity_acquire':
            remember(st['entities'], (a.get('entity_type'), a.get('entity_id')))
        elif name == 'lock_acquire' and rows:
            tok = list(rows[0].values())[0]
            if tok is not None:
                remember(st['locks'], (a.get('key'), a.get('owner'), tok))
        elif name == 'reserve' and rows:
            v = list(rows[0].values())[0]
            if v is not None:
                remember(st['reservations'], str(v))
        elif name in ('enqueue', 'enqueue_batch'):
            for r in rows:
                if r.get('job_id'):
                    remember(st['jobs'], str(r['job_id']), 60)
        elif name == 'dequeue':
            for r in rows:
                if r.get('job_id'):
                    remember(st['leased'], (str(r['job_id']), a.get('worker_id')), 30)

    # ---- after each batch ---------------------------------------------------------------------------
    def check_spy_log(self):
        ctl = self.control()
        rows = ctl.execute("""SELECT id, cur, sess, what, query FROM fuzzlog.spy WHERE id > %s ORDER BY id""",
                           (self.spy_seen,)).fetchall()
        if rows:
            self.spy_seen = rows[-1][0]
        for _id, cur, sess, what, query in rows:
            if cur != sess and sess != hostile.role_name('super'):
                self.fail('escalation', f'{what} ran as {cur} (spy log)',
                          f'{what} ran with current_user {cur}, session_user {sess}; statement: '
                          f'{(query or "")[:300]}\n' + self.batch_text())
        ctl.execute('DELETE FROM fuzzlog.spy WHERE id <= %s', (self.spy_seen,))

    def batch_text(self):
        ok = [c for c in self.batch_calls if getattr(c, 'outcome', ('',))[0] == '00000']
        lines = [f'the batch\'s {len(ok)} successful calls (of {len(self.batch_calls)}), one of them is the cause:']
        for c in ok[-12:]:
            lines.append(f'  #{c.index} as {c.role}: {c.literal_sql()[:400]}')
        return '\n'.join(lines)

    def health(self):
        try:
            h = self.health_conn()
            queues = [r[0] for r in h.execute('SELECT name FROM conveyor.queues ORDER BY queue_id LIMIT 60')]
            accounts = [r[0] for r in h.execute('SELECT account FROM conveyor.accounts ORDER BY account LIMIT 60')]
        except psycopg.Error as e:
            self.fail('poisoned', f'health: listing queues/accounts: {e.sqlstate} {self.norm(str(e))}',
                      f'{e.sqlstate}: {str(e)[:300]}\n' + self.batch_text())
            return False
        checks = [('queue_metrics(NULL)', 'SELECT * FROM conveyor.queue_metrics(NULL)', (), False),
                  ('quota_status(NULL)', 'SELECT * FROM conveyor.quota_status(NULL)', (), False),
                  ('ledger_verify(NULL)', 'SELECT * FROM conveyor.ledger_verify(NULL)', (), False)]
        for q in queues:
            checks.append(('queue_metrics(queue)', 'SELECT * FROM conveyor.queue_metrics(%s)', (q,), False))
            checks.append(('dequeue(queue) rolled back', 'SELECT * FROM conveyor.dequeue(%s, %s, 10)',
                           (q, 'cvfuzz-health'), True))
        for a in accounts:
            checks.append(('account_status(account)', 'SELECT * FROM conveyor.account_status(%s)', (a,), False))
        healthy = True
        for what, query, params, rollback in checks:
            for attempt in range(3):
                try:
                    if rollback:
                        with h.transaction(force_rollback=True):
                            rows = h.execute(query, params).fetchall()
                    else:
                        rows = h.execute(query, params).fetchall()
                    if what.startswith('ledger_verify') and any(r[-1] is False for r in rows):
                        bad = [r for r in rows if r[-1] is False]
                        self.fail('poisoned', 'health: ledger_verify reports ok = false',
                                  f'ledger_verify(NULL) rows not ok: {bad[:3]}\n' + self.batch_text())
                        healthy = False
                    break
                except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                    if h.broken or h.closed:
                        self.crashes += 1
                        self.recover()
                        self.fail('crash', f'health call {what}: connection lost',
                                  f'{str(e)[:300]}\n' + self.batch_text())
                        return False
                    err = e
                except psycopg.Error as e:
                    err = e
                else:
                    break
                if err.sqlstate in ('40001', '40P01', '55P03') and attempt < 2:
                    continue
                msg = err.diag.message_primary or str(err)
                cls = 'timeout' if err.sqlstate == '57014' else 'poisoned'
                self.fail(cls, f'health: {what} fails with {err.sqlstate} {self.norm(msg)}',
                          f'{what} as {hostile.role_name("admin")} (params {[str(p)[:60] for p in params]}) '
                          f'fails: {err.sqlstate} {msg[:300]}\n' + self.batch_text())
                healthy = False
                break
        return healthy

    # ---- main loop ----------------------------------------------------------------------------------
    def run(self):
        self.setup()
        t0 = time.monotonic()
        deadline = t0 + self.o.seconds
        batches = 0
        while self.calls < self.o.calls and time.monotonic() < deadline:
            self.batch_calls = []
            for _ in range(self.o.batch):
                if self.calls >= self.o.calls or time.monotonic() >= deadline:
                    break
                call = self.template() if self.gen.chance(0.55) else self.random_call()
                state, rows = self.execute(call)
                self.harvest(call, state, rows)
            batches += 1
            self.check_spy_log()
            if not self.health():
                self.reset_extension('a failed health check')
        self.elapsed = time.monotonic() - t0
        self.batches = batches
        self.scan_server_log()
        return self.report()

    def scan_server_log(self):
        """A crash the lost connections did not show (e.g. of a session the fuzz did not own)."""
        hits = [ln for ln in self.new_log_lines() if 'terminated by signal' in ln]
        if hits:
            self.fail('crash', f'server log: {len(hits)} "terminated by signal" line(s) after the last call',
                      '\n'.join(h[:300] for h in hits[:5]))

    def report(self):
        states = ', '.join(f'{k} {v}' for k, v in sorted(self.states.items()))
        per_class = ', '.join(f'{c} {sum(self.signatures[(c, s)] for s, _ in self.failures[c])}'
                              for c in CLASSES)
        log(f'fuzz: seed {self.seed}, {self.calls} calls in {self.elapsed:.0f} s ({self.batches} batches of '
            f'at most {self.o.batch}, {len(self.procs)} functions, {self.crashes} reconnects after a lost '
            f'connection, {self.resets} resets after a poisoned state)')
        log(f'fuzz: by SQLSTATE: {states}')
        if self.client_errors:
            log('fuzz: refused client-side: ' + '; '.join(f'{m} ({n})' for m, n in self.client_errors.most_common(3)))
        log(f'fuzz: failures by class (occurrences): {per_class}')
        failed = False
        print(f'{"ok" if self.calls > 0 else "not ok"} - fuzz made {self.calls} calls (seed {self.seed})')
        for c in CLASSES:
            found = self.failures[c]
            if found:
                failed = True
                print(f'not ok - fuzz: {CLASS_TITLES[c]}: {len(found)} distinct')
                for sig, _ in found:
                    log(f'  [{c}] {sig}')
            else:
                print(f'ok - fuzz: {CLASS_TITLES[c]}')
        if failed:
            log(f'reproduce: FUZZ_SEED={self.seed} FUZZ_CALLS={self.calls} bash test/fuzz/run.sh '
                '(the same seed makes the same calls; the reproducers above are standalone SQL)')
        return 1 if failed or self.calls == 0 else 0


def main():
    p = argparse.ArgumentParser(description='SQL-level fuzzer for conveyor')
    p.add_argument('--db', required=True, help='database with conveyor installed')
    p.add_argument('--seed', type=int, default=None)
    p.add_argument('--seconds', type=float, default=120)
    p.add_argument('--calls', type=int, default=4000)
    p.add_argument('--batch', type=int, default=25)
    p.add_argument('--superuser', default=os.environ.get('PGUSER', 'postgres'))
    p.add_argument('--server-log', default=None)
    p.add_argument('--server-log-offset', type=int, default=0)
    o = p.parse_args()
    if o.seed is None:
        o.seed = random.SystemRandom().randrange(1, 2**31)
    log(f'fuzz: seed {o.seed}, at most {o.calls} calls and {o.seconds:.0f} s, database {o.db}')
    f = Fuzzer(o)
    if o.calls == 0:     # only create the roles, schemas, spy objects and hostile tables
        f.setup()
        log('fuzz: objects created; no calls made')
        sys.exit(0)
    sys.exit(f.run())


if __name__ == '__main__':
    main()
