#!/usr/bin/python3
"""Runs the ```sql blocks of one Markdown file in order, in one psql session on a fresh database, and
compares the results they show. Used by test/shell/docs_examples.sh; the convention it reads is in
docs/testing.md ("Examples in the documentation").

usage: docs_examples.py FILE DATABASE   (PGHOST, PGPORT, PGUSER in the environment)
Prints one TAP line per block ("ok - FILE:LINE ..." or "not ok - FILE:LINE ...") with the reason as
"# " lines; exits 1 if any block failed."""
import os
import re
import subprocess
import sys

SEVERITIES = ('ERROR', 'FATAL', 'DETAIL', 'HINT', 'CONTEXT', 'NOTICE', 'WARNING', 'INFO', 'QUERY', 'STATEMENT')
MARKER = '@@docs-test unit '
ELLIPSIS = '\u2026'


class Unit:
    """One statement (or psql meta-command) of a block and the result shown after it."""

    def __init__(self, line):
        self.line = line          # line number in the file where the statement starts
        self.text = ''
        self.shown = []           # (line number, text) of the shown result, '-- ' stripped
        self.arrow = None         # the value of a '-- → value' comment
        self.accepting = True     # result lines directly below still belong to it


def is_result_line(line):
    """A comment line at column 0 that shows output: psql's table lines start with a space after
    '-- ' (or are its '---+---' rule), messages with their severity, '→' a single value, '…' any lines."""
    if not line.startswith('--'):
        return False
    rest = line[2:]
    if rest.strip() == '':
        return False
    if rest.startswith('  ') or rest.startswith(' -'):
        return True
    body = rest[1:] if rest.startswith(' ') else rest
    if body.startswith('\u2192') or body.strip() == ELLIPSIS:
        return True
    if body.startswith('Asynchronous notification'):
        return True
    return re.match(r'(%s):' % '|'.join(SEVERITIES), body) is not None


def split_units(lines, first):
    """Splits a block (lines, the first at file line `first`) into units the way psql does: a ';'
    outside quotes, comments and parentheses ends a statement, and a backslash outside quotes starts
    a meta-command that runs to the end of its line. Returns (units, error)."""
    units = []
    cur = None
    quote = None         # "'", '"', or a dollar tag such as '$$'
    block_comment = 0
    paren = 0
    for k, line in enumerate(lines):
        lineno = first + k
        if cur is None and quote is None and block_comment == 0:
            stripped = line.strip()
            if stripped == '':
                if units:
                    units[-1].accepting = False
                continue
            if stripped.startswith('--'):
                # A bare '--' inside a result is psql's empty line (before a notification, say).
                if line.rstrip() == '--' and units and units[-1].accepting and units[-1].shown \
                        and k + 1 < len(lines) and is_result_line(lines[k + 1]):
                    units[-1].shown.append((lineno, ''))
                    continue
                if units and units[-1].accepting and is_result_line(line):
                    body = line[3:] if line.startswith('-- ') else line[2:]
                    if body.startswith('\u2192'):
                        units[-1].arrow = (lineno, body[1:].strip())
                    else:
                        units[-1].shown.append((lineno, body.rstrip()))
                elif units:
                    units[-1].accepting = False
                continue
        j = 0
        n = len(line)
        while j < n:
            if cur is None:
                if line[j:].strip() == '':
                    break
                if quote is None and block_comment == 0 and line[j:].lstrip().startswith('--'):
                    comment = line[j:].lstrip()[2:].strip()
                    if units and comment.startswith('\u2192') and units[-1].line <= lineno:
                        units[-1].arrow = (lineno, comment[1:].strip())
                    break
                cur = Unit(lineno)
                start = j
                while start < n and line[start] == ' ':
                    start += 1
                j = start
                seg_start = start
            c = line[j]
            if block_comment:
                if line.startswith('*/', j):
                    block_comment -= 1
                    j += 2
                    continue
                if line.startswith('/*', j):
                    block_comment += 1
                    j += 2
                    continue
                j += 1
                continue
            if quote is not None:
                if quote in ("'", '"'):
                    if c == quote:
                        if line.startswith(quote * 2, j):
                            j += 2
                            continue
                        quote = None
                    j += 1
                    continue
                if line.startswith(quote, j):
                    j += len(quote)
                    quote = None
                    continue
                j += 1
                continue
            if line.startswith('--', j):
                break
            if line.startswith('/*', j):
                block_comment = 1
                j += 2
                continue
            if c in ("'", '"'):
                quote = c
                j += 1
                continue
            if c == '$':
                m = re.match(r'\$([A-Za-z_][A-Za-z_0-9]*)?\$', line[j:])
                if m and not (j > 0 and (line[j - 1].isalnum() or line[j - 1] == '_')):
                    quote = m.group(0)
                    j += len(quote)
                    continue
            if c == '(':
                paren += 1
            elif c == ')':
                paren = max(0, paren - 1)
            elif c == ';' and paren == 0:
                cur.text += line[seg_start:j + 1]
                cur.accepting = True
                units.append(cur)
                cur = None
                j += 1
                continue
            elif c == '\\':
                cur.text += line[seg_start:]
                cur.accepting = True
                units.append(cur)
                cur = None
                paren = 0
                break
            j += 1
        if cur is not None:
            cur.text += line[seg_start:] + '\n'
            seg_start = 0
        elif units and units[-1].text and not units[-1].text.endswith('\n'):
            units[-1].text += '\n'
    if cur is not None or quote is not None or block_comment:
        return units, 'the block ends inside a statement (no ";" after the last one)'
    return units, None


def parse_markdown(path):
    """The ```sql blocks of a file: (fence line, lines, directive), where directive comes from an
    HTML comment '<!-- docs-test: ... -->' on the last non-blank line before the fence."""
    blocks = []
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    i = 0
    previous = ''
    while i < len(lines):
        line = lines[i]
        m = re.match(r'^(\s*)```(\S*)', line)
        if m:
            lang = m.group(2)
            fence = i + 1
            body = []
            i += 1
            while i < len(lines) and not re.match(r'^\s*```\s*$', lines[i]):
                body.append(lines[i])
                i += 1
            if lang == 'sql':
                d = re.match(r'^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$', previous)
                blocks.append((fence, body, d.group(1) if d else None))
            previous = ''
            i += 1
            continue
        if line.strip():
            previous = line
        i += 1
    return blocks


def wildcard(expected, actual):
    pattern = ''.join('.*' if part == ELLIPSIS else re.escape(part)
                      for part in re.split('(%s)' % ELLIPSIS, expected))
    return re.fullmatch(pattern, actual, re.S) is not None


RULE = re.compile(r'^-+(\+-+)*$')
MESSAGE = re.compile(r'^(%s):  (?:([0-9A-Z]{5}): )?(.*)$' % '|'.join(SEVERITIES))


def line_matches(expected, actual):
    e = expected.strip()
    a = actual.strip()
    if RULE.match(e):
        return RULE.match(a) is not None and e.count('+') == a.count('+')
    me = MESSAGE.match(e)
    if me:
        ma = MESSAGE.match(a)
        if not ma or ma.group(1) != me.group(1):
            return False
        if me.group(2) and me.group(2) != ma.group(2):
            return False
        return wildcard(me.group(3), ma.group(3))
    if '|' in e or '|' in a:
        ec = [c.strip() for c in e.split('|')]
        ac = [c.strip() for c in a.split('|')]
        return len(ec) == len(ac) and all(wildcard(x, y) for x, y in zip(ec, ac))
    return wildcard(e, a)


def lines_match(expected, actual):
    """Line by line; an expected line that is only '…' stands for any number of lines."""
    if not expected:
        return not actual
    if expected[0].strip() == ELLIPSIS:
        return any(lines_match(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and line_matches(expected[0], actual[0]) and lines_match(expected[1:], actual[1:])


def clean_output(raw):
    """psql's output of one unit: 'psql:<stdin>:N: ' prefixes and LOCATION lines dropped, blank lines
    at either end dropped."""
    out = []
    for line in raw:
        line = re.sub(r'^psql:<stdin>:\d+: ', '', line)
        if line.startswith('LOCATION:  '):
            continue
        out.append(line.rstrip())
    while out and out[0] == '':
        out.pop(0)
    while out and out[-1] == '':
        out.pop()
    return out


def without_notices(lines):
    """Drops NOTICE, WARNING and INFO messages (with their DETAIL, HINT, CONTEXT lines)."""
    out = []
    dropping = False
    for line in lines:
        m = MESSAGE.match(line)
        if m and m.group(1) in ('NOTICE', 'WARNING', 'INFO'):
            dropping = True
            continue
        if dropping and m and m.group(1) in ('DETAIL', 'HINT', 'CONTEXT', 'QUERY'):
            continue
        dropping = False
        out.append(line)
    return out


def error_lines(lines):
    return [l for l in lines if re.match(r'^(ERROR|FATAL|PANIC):', l) or re.match(r'^error:', l, re.I)]


def single_value(lines):
    """The value of a one-column, one-row table (psql aligned output), or None."""
    rows = [l for l in lines if l != '']
    if len(rows) != 3 or not RULE.match(rows[1].strip()) or '+' in rows[1]:
        return None
    return rows[2].strip()


def check_unit(u, out):
    """Returns a list of complaints (empty when the unit ran as shown)."""
    errors = error_lines(out)
    shown = [t for _, t in u.shown]
    shows_error = any(re.match(r'^(ERROR|FATAL):', t) for t in shown)
    where = 'line %d' % u.line
    if errors and not shows_error:
        return ['%s: an error the documentation does not show' % where] + out
    if shows_error and not errors:
        return ['%s: the error shown did not happen; got:' % where] + out
    if u.arrow is not None:
        value = single_value(out)
        if value is None or not wildcard(u.arrow[1], value):
            return ['line %d: shown "\u2192 %s"; got:' % (u.arrow[0], u.arrow[1])] + out
    if shown:
        got = out
        if not any(MESSAGE.match(t) and MESSAGE.match(t).group(1) in ('NOTICE', 'WARNING', 'INFO') for t in shown):
            got = without_notices(out)
        if not lines_match(shown, got):
            return ['line %d: the result differs; shown:' % u.shown[0][0]] + ['  ' + t for t in shown] + \
                   ['got:'] + ['  ' + t for t in got]
    return []


def run_psql(dbname, units, env):
    script = ['\\set VERBOSITY verbose', '\\pset footer off']
    for k, u in enumerate(units):
        script.append('\\echo ' + MARKER + str(k))
        script.append(u.text.rstrip('\n'))
    script.append('\\echo ' + MARKER + 'end')
    proc = subprocess.run(['stdbuf', '-o0', '-e0', 'psql', '-X', '-d', dbname, '-f', '-'],
                          input='\n'.join(script) + '\n', stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, text=True, timeout=600)
    outputs = {}
    current = None
    for line in proc.stdout.split('\n'):
        if line.startswith(MARKER):
            current = line[len(MARKER):]
            outputs[current] = []
        elif current is not None:
            outputs[current].append(line)
    return [clean_output(outputs.get(str(k), ['(no output: psql stopped before this statement)']))
            for k in range(len(units))], proc.stdout


def main():
    path, dbname = sys.argv[1], sys.argv[2]
    env = dict(os.environ, PGTZ='UTC', PGOPTIONS='-c TimeZone=UTC', PGAPPNAME='docs_examples')
    blocks = parse_markdown(path)
    # Every runnable unit of the file, in order, for one session per database (the file's own
    # database; a block marked "database NAME" runs in a session of its own on NAME).
    plan = []   # (fence line, directive, units, error)
    for fence, body, directive in blocks:
        if directive and directive.startswith('skip:'):
            plan.append((fence, directive, [], None))
            continue
        units, err = split_units(body, fence + 1)
        plan.append((fence, directive, units, err))

    sessions = {}   # database -> units in order
    for fence, directive, units, err in plan:
        if err or (directive and directive.startswith('skip:')):
            continue
        db = dbname
        if directive:
            m = re.match(r'^database (\S+)$', directive)
            if not m:
                continue
            db = m.group(1)
        sessions.setdefault(db, []).extend(units)
    results = {}
    for db, units in sessions.items():
        outs, _ = run_psql(db, units, env)
        for u, o in zip(units, outs):
            results[id(u)] = o

    failed = 0
    name = os.path.relpath(path)
    for fence, directive, units, err in plan:
        label = '%s:%d' % (name, fence)
        if directive and directive.startswith('skip:'):
            print('ok - %s # skip %s' % (label, directive[5:].strip()))
            continue
        if directive and not re.match(r'^database (\S+)$', directive):
            failed += 1
            print('not ok - %s: unknown docs-test directive "%s"' % (label, directive))
            continue
        complaints = [err] if err else []
        if not units and not err:
            complaints.append('no statement in the block')
        for u in units:
            if complaints:
                break
            complaints = check_unit(u, results[id(u)])
        if complaints:
            failed += 1
            print('not ok - %s (%d statements)' % (label, len(units)))
            for c in complaints[:60]:
                print('#   ' + c)
        else:
            extra = ' in database %s' % directive.split()[1] if directive else ''
            print('ok - %s (%d statements%s)' % (label, len(units), extra))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
