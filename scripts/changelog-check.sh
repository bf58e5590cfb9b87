#!/bin/sh
# The collection's changelog checks (run by `make lint`):
#   1. `antsibull-changelog lint`: every fragment in changelogs/fragments/ is well-formed,
#      and `lint-changelog-yaml`: changelogs/changelog.yaml is;
#   2. CHANGELOG.md is what antsibull-changelog generates from changelog.yaml (no hand edits);
#   3. a fragment for every change: when calico_lib/, plugins/, roles/ or playbooks/ changed
#      since the last release, a file was added to changelogs/fragments/ since then.
#
# "Since the last release", robustly on any clone:
#   - since the git tag of the newest release in changelog.yaml (X.Y.Z or vX.Y.Z) when the
#     clone has it;
#   - else since the commit that last changed changelogs/changelog.yaml: a release rewrites
#     it (antsibull-changelog release), so that commit is the release, and a fresh clone
#     without tags (CI often fetches none) still has it;
#   - changes count whether committed, staged, unstaged or untracked (a check before the
#     commit sees what the commit will hold);
#   - nothing to compare with, so only 1 and 2: no git (a tarball), changelog.yaml with
#     no commit yet or with uncommitted changes (a release being made in this tree). A
#     shallow clone whose history stops after the release sees its oldest commit as the
#     release: the check may pass a change it cannot see, never fail one that has a
#     fragment.
# A change that needs no changelog entry still gets a fragment, in the `trivial` section.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin="$root/.venv/bin"
[ -x "$bin/antsibull-changelog" ] || {
    echo "changelog-check: antsibull-changelog missing (run make deps)" >&2; exit 1; }
# antsibull-changelog runs ansible-doc to list the modules
PATH="$bin:$PATH"
export PATH
CODE="calico_lib plugins roles playbooks"
FRAGMENTS=changelogs/fragments

antsibull-changelog lint
antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml

generated=$(mktemp)
trap 'rm -f "$generated"' EXIT INT TERM
antsibull-changelog generate --output "$generated" --output-format md
if ! cmp -s "$generated" CHANGELOG.md; then
    echo "changelog-check: CHANGELOG.md is not what changelogs/ generates; run" \
         "'antsibull-changelog generate' (never edit it by hand)" >&2
    diff -u CHANGELOG.md "$generated" | head -40 >&2 || true
    exit 1
fi

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo "changelog-check: not a git checkout; fragments not compared with the last release"
    exit 0
fi
release=$("$bin/python" -c '
import yaml
from packaging.version import Version
with open("changelogs/changelog.yaml", encoding="utf-8") as f:
    releases = (yaml.safe_load(f) or {}).get("releases") or {}
print(max(releases, key=Version) if releases else "")')
base=""
for tag in "$release" "v$release"; do
    if [ -n "$release" ] && git rev-parse -q --verify "refs/tags/$tag^{commit}" >/dev/null
    then
        base=$tag
        break
    fi
done
if [ -z "$base" ]; then
    if [ -n "$(git status --porcelain -- changelogs/changelog.yaml)" ]; then
        echo "changelog-check: changelogs/changelog.yaml is new or changed and not committed" \
             "(a release being made); fragments not compared with the last release"
        exit 0
    fi
    base=$(git log -1 --format=%H -- changelogs/changelog.yaml)
    if [ -z "$base" ]; then
        echo "changelog-check: changelogs/changelog.yaml has no commit yet; fragments not" \
             "compared with the last release"
        exit 0
    fi
fi
if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
    echo "changelog-check: note: a shallow clone; changes older than its history are not seen"
fi

# shellcheck disable=SC2086 # word lists
changed=$( { git diff --name-only "$base" -- $CODE
             git ls-files --others --exclude-standard -- $CODE; } | sort -u)
added=$( { git diff --name-only --no-renames --diff-filter=A "$base" -- "$FRAGMENTS"
           git ls-files --others --exclude-standard -- "$FRAGMENTS"; } \
         | grep -E '\.ya?ml$' | sort -u || true)
if [ -n "$changed" ] && [ -z "$added" ]; then
    count=$(echo "$changed" | wc -l)
    echo "changelog-check: $count file(s) of $CODE changed since release" \
         "$release ($base) but no fragment was added to $FRAGMENTS/; add one" \
         "(changelogs/config.yaml lists the sections; 'trivial' for a change users never" \
         "see). Changed:" >&2
    echo "$changed" | head -20 | sed 's/^/  /' >&2
    exit 1
fi
echo "changelog-check: ok ($(echo "$added" | grep -c . || true) fragment(s) added since" \
     "the last release${release:+ $release})"
