#!/usr/bin/env python3
"""Every relative Markdown link in the .md files under DIR names a file that exists there.

Usage: check-doc-links.py DIR|FILE [DIR|FILE...]   (exit 1 and the broken links if any; 2 if no page)
Links with a scheme (http:, https:, mailto:) and pure #anchors are not checked; a link's
#anchor part is ignored. Links inside code spans and fenced blocks are not links.
"""
import os, re, sys

LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')

def pages(top):
    if os.path.isfile(top):
        yield top
        return
    for root, _, files in os.walk(top):
        for f in files:
            if f.endswith('.md'):
                yield os.path.join(root, f)

def links(text):
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    text = re.sub(r'`[^`\n]*`', '', text)
    return LINK.findall(text)

def main(dirs):
    broken, seen = [], 0
    for top in dirs:
        for page in pages(top):
            seen += 1
            for target in links(open(page, encoding='utf-8').read()):
                if re.match(r'^[a-z]+:', target) or target.startswith('#'):
                    continue
                path = os.path.normpath(os.path.join(os.path.dirname(page), target.split('#')[0]))
                if not os.path.exists(path):
                    broken.append(f'{page}: {target}')
    if seen == 0:
        print('no pages found', file=sys.stderr)
        return 2
    for b in broken:
        print(f'broken link: {b}', file=sys.stderr)
    return 1 if broken else 0

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:] or ['.']))
