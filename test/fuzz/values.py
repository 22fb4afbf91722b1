"""Adversarial argument values for conveyor's functions, by PostgreSQL type and by parameter name.

Every value is a Python str (sent as a parameter and cast server-side to the argument's type) or None
(SQL NULL). Nothing here talks to the server; fuzz.py owns the connections. All choices come from the
random.Random passed in, so a seed gives the same values.
"""
import json
import uuid

INT_EDGES = {
    'smallint': ['0', '-1', '1', '-32768', '32767'],
    'integer': ['0', '-1', '1', '2', '-2147483648', '2147483647', '-2147483647', '2147483646', '100', '3600',
                '86400', '604800', '1000000'],
    'bigint': ['0', '-1', '1', '-9223372036854775808', '9223372036854775807', '9223372036854775806',
               '4611686018427387904', '2147483648', '1000'],
}
NUMERIC_EDGES = ['0', '-0', '1', '-1', '0.000001', '0.0000001', 'NaN', 'Infinity', '-Infinity', '1e308', '-1e308',
                 '1e-400', '99999999999999999999', '-99999999999999999999', '999999999999999999.999999',
                 '1e1000', '123456789012345678901234567890.123456789', '1.5', '0.01', '100']
FLOAT_EDGES = ['0', '-0', 'NaN', 'Infinity', '-Infinity', '1e308', '1.7976931348623157e308', '5e-324', '-1']
TIMESTAMP_EDGES = ['infinity', '-infinity', '4713-01-01 00:00:00+00 BC', '294276-12-31 23:59:59+00',
                   '294276-12-31 23:59:59.999999+00', '4713-11-24 00:00:00+00 BC', 'epoch', 'now', 'today',
                   'tomorrow', 'yesterday', '1970-01-01 00:00:00+00', '2000-02-29 12:00:00+14',
                   '9999-12-31 23:59:59-12', '0001-01-01 00:00:00+00', 'not a time', '']
INTERVAL_EDGES = ['0', '1 second', '-1 second', '178000000 years', '-178000000 years', 'infinity', 'x']
UUID_EDGES = ['00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
              '017f22e2-79b0-7cc3-98c4-dc0c0c07398f', 'not-a-uuid', '']
BOOL_EDGES = ['true', 'false', 't', 'f', 'maybe', '']

# Text that breaks naive code: multibyte runs past every limit (700 and 5000 characters of 2- and
# 3-byte UTF-8), control characters, quotes, format strings, look-alike names.
def long_texts():
    return ['é' * 700, 'é' * 5000, '日' * 700, '日' * 5000, 'x' * 1025, 'x' * 3000, 'a' * 100000,
            'é' * 1023 + 'x', '🦀' * 600]

ODD_TEXTS = ['', ' ', 'a', 'A', '-', '0', 'null', 'NULL', 'NaN', 'Infinity', '{}', '[]', '%s%s%n%x', '{0}{1}',
             "'; DROP TABLE conveyor.jobs; --", '"quoted"', "it's", '\\', '\t\n\r', '\u202e\u200b', 'ﬁ', 'İ',
             'conveyor', 'pg_catalog', 'public', 'evil', 'default', 'é', '日本語', ' trailing ', 'a.b.c',
             'x' * 63, 'x' * 64]

# Parameters whose name says what they want: plausible values first, then edges.
NAMED = {
    'period': ['day', 'hour', 'minute', 'week', 'month', 'year', 'second', 'fortnight', 'DAY', ''],
    'tz': ['UTC', 'Europe/Paris', 'America/St_Johns', 'Pacific/Kiritimati', '+14', '-12', 'Mars/Olympus', ''],
    'reset_tz': ['UTC', 'Asia/Kathmandu', 'America/Adak', 'Etc/GMT+12', 'Nowhere/Nothing', ''],
    'currency': ['USD', 'EUR', '', 'é' * 8, 'usd'],
    'event_trail': ['all', 'failures', 'none', ''],
    'operation': ['search', 'list', 'é' * 700, ''],
}

REGCLASS_EDGES = ['pg_class', 'pg_catalog.pg_authid', 'pg_catalog.pg_statistic', 'conveyor.jobs', 'conveyor.queues',
                  'conveyor.change_log', 'conveyor.idempotency_keys', 'conveyor.locks_view', 'pg_stat_activity',
                  'conveyor.queue_id_seq', 'conveyor.job_events', 'conveyor.job_history', 'information_schema.tables',
                  'no_such_table', 'no_schema.no_table', '"" ', '0', '1', '259', '1259', '99999', '4294967295',
                  '-1', 'pg_toast.pg_toast_1255', '']

# Keys that conveyor's JSON options and documents use; random objects mix them with edge values.
JSON_KEYS = ['payload', 'job_type', 'group_key', 'priority', 'run_at', 'dedup_key', 'max_attempts', 'lease_seconds',
             'backoff_base_seconds', 'backoff_max_seconds', 'job_types', 'required_keys', 'retention_days',
             'notify', 'event_trail', 'audit', 'operation_id', 'strict', 'touch_columns', 'immutable_columns',
             'fence', 'entity_id', 'metrics', 'captured_at', 'key', 'token', 'owner', 'k', 'v', 'j', 'd',
             'search', 'list', 'units', 'cost', 'amount', '', 'é' * 700]

JSON_EDGE_SCALARS = [1e308, -1e308, -0.0, 0, -1, 2147483647, 2147483648, -2147483649, 9223372036854775807,
                     9223372036854775808, 99999999999999999999, 'NaN', 'Infinity', '-Infinity', 'infinity',
                     '-infinity', '', None, True, False, 'é' * 700, '日' * 5000, [], {}, 0.5, 1e-300]
# Numbers Python's json cannot write as they must appear on the wire.
JSON_RAW_NUMBERS = ['1e-400', '1e400', '-0', '99999999999999999999', '1E+308', '0.0000000000000000000001',
                    '123456789012345678901234567890']


class Gen:
    def __init__(self, rng):
        self.rng = rng

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def chance(self, p):
        return self.rng.random() < p

    def ident(self):
        return ''.join(self.pick('abcdefghijklmnopqrstuvwxyz0123456789_') for _ in range(self.rng.randint(1, 12)))

    def text(self, name=''):
        r = self.rng.random()
        if name in NAMED and r < 0.6:
            return self.pick(NAMED[name])
        if r < 0.25:
            return self.pick(long_texts())
        if r < 0.55:
            return self.pick(ODD_TEXTS)
        return 'fz_' + self.ident()

    def integer(self, typ):
        if self.chance(0.9):
            return self.pick(INT_EDGES.get(typ, INT_EDGES['bigint']))
        return self.pick(['1.5', 'abc', '', '1e3', '99999999999999999999999'])

    def json_scalar(self):
        v = self.pick(JSON_EDGE_SCALARS)
        return v

    def json_value(self, depth=0):
        r = self.rng.random()
        if depth > 4 or r < 0.4:
            return self.json_scalar()
        if r < 0.7:
            return {self.pick(JSON_KEYS) if self.chance(0.7) else self.ident(): self.json_value(depth + 1)
                    for _ in range(self.rng.randint(0, 5))}
        return [self.json_value(depth + 1) for _ in range(self.rng.randint(0, 5))]

    def dumps(self, v):
        return json.dumps(v, ensure_ascii=self.chance(0.5))

    def jsonb(self, name=''):
        r = self.rng.random()
        if r < 0.08:   # deeply nested
            depth = self.pick([100, 1000, 5000, 20000])
            o, c = (('[', ']') if self.chance(0.5) else ('{"a":', '}'))
            return o * depth + '1' + c * depth
        if r < 0.14:   # huge
            n = self.pick([10000, 100000])
            if self.chance(0.5):
                return json.dumps([{'k': i, 'v': 'é' * 10} for i in range(n // 10)])
            return json.dumps({'payload': 'x' * (n * 10), 'run_at': 'infinity'})
        if r < 0.24:   # raw numbers at every edge, in arrays and objects
            num = self.pick(JSON_RAW_NUMBERS)
            return self.pick(['%s', '[%s]', '{"priority": %s}', '{"lease_seconds": %s}', '{"amount": %s}',
                              '[{"run_at": "infinity", "priority": %s}]', '{"%s": 1}']) % num
        if r < 0.3:
            return self.pick(['', 'null', '{', '[1,]', 'NaN', 'Infinity', '"\\u0000"', '{"a":1,"a":2}',
                              '"\\ud800"', '[]', '{}', 'true', '"é"'])
        v = self.json_value()
        if self.chance(0.4):
            v = [v if isinstance(v, dict) else {'payload': v} for _ in range(self.rng.randint(1, 4))]
        return self.dumps(v)

    def uuid(self, pool=()):
        if pool and self.chance(0.5):
            return self.pick(pool)
        if self.chance(0.4):
            return str(uuid.UUID(int=self.rng.getrandbits(128)))
        return self.pick(UUID_EDGES)

    def array(self, elem, pool=()):
        r = self.rng.random()
        if r < 0.2:
            return self.pick(['{}', '{NULL}', '{{NULL}}', '{{{{{{1}}}}}}', '{{{{{{{1}}}}}}}', '{{1,2},{3}}',
                              '{', '[0:1]={a,b}', '[-2147483648:-2147483647]={a,b}', '{"",""}'])
        items = []
        for _ in range(self.rng.randint(0, 6)):
            if self.chance(0.2):
                items.append('NULL')
            else:
                v = self.value(elem, '', pool)
                items.append('NULL' if v is None else '"' + v.replace('\\', '\\\\').replace('"', '\\"') + '"')
        lit = '{' + ','.join(items) + '}'
        for _ in range(self.rng.choice([0, 0, 0, 1, 2, 5])):  # more dimensions
            lit = '{' + lit + '}'
        return lit

    def value(self, typ, name='', pool=()):
        """An adversarial value (str) or None for an argument of type typ named name."""
        if self.chance(0.08):
            return None
        if typ.endswith('[]'):
            return self.array(typ[:-2], pool)
        if typ == 'text' or typ.startswith('character') or typ == 'name':
            if pool and self.chance(0.3):
                return self.pick(pool)
            return self.text(name)
        if typ in INT_EDGES:
            return self.integer(typ)
        if typ == 'numeric':
            return self.pick(NUMERIC_EDGES)
        if typ in ('double precision', 'real'):
            return self.pick(FLOAT_EDGES)
        if typ in ('jsonb', 'json'):
            return self.jsonb(name)
        if typ.startswith('timestamp') or typ == 'date':
            if self.chance(0.4):   # the extremes, more often than the rest
                return self.pick(TIMESTAMP_EDGES[:4])
            return self.pick(TIMESTAMP_EDGES)
        if typ == 'interval':
            return self.pick(INTERVAL_EDGES)
        if typ == 'uuid':
            return self.uuid(pool)
        if typ == 'boolean':
            return self.pick(BOOL_EDGES)
        if typ == 'regclass':
            if pool and self.chance(0.5):
                return self.pick(pool)
            return self.pick(REGCLASS_EDGES)
        return self.text(name)
