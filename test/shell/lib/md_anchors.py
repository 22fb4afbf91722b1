# Every markdown link to a heading (file.md#anchor or #anchor) names a heading that exists, by the
# anchors GitHub makes: lower case, punctuation dropped, spaces to hyphens, repeats numbered.
import os, re, sys
def slugs(path):
    out, seen, fence = set(), {}, False
    for line in open(path, encoding='utf-8'):
        if line.startswith('```'):
            fence = not fence
            continue
        m = None if fence else re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not m:
            continue
        text = re.sub(r'`|\*\*|\[([^\]]*)\]\([^)]*\)', lambda g: g.group(1) or '', m.group(1))
        slug = re.sub(r'[^\w\- ]', '', text.lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f'{slug}-{n}')
    for m in re.finditer(r'<a (?:name|id)="([^"]+)"', open(path, encoding='utf-8').read()):
        out.add(m.group(1))
    return out
bad = []
cache = {}
for src in sys.argv[1:]:
    text = open(src, encoding='utf-8').read()
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    for target, anchor in re.findall(r'\]\(([^)#\s]*)#([^)\s]+)\)', text):
        if target.startswith(('http://', 'https://')):
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(src), target)) if target else src
        if not os.path.exists(path):
            bad.append(f'{src}: {target}#{anchor} (no such file)')
            continue
        if path not in cache:
            cache[path] = slugs(path)
        if anchor not in cache[path]:
            bad.append(f'{src}: {target}#{anchor}')
print('\n'.join(bad))
