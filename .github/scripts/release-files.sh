#!/usr/bin/env bash
# The release files `cargo xtask publish` and `cargo xtask rollback` write on
# AWS, which are the release log and must be committed:
#   terraform/prod.auto.tfvars.json  the prod pin (terraform.rs PIN_FILE)
#   terraform/prod.releases.json     the release history (terraform.rs HISTORY_FILE)
#
#   release-files.sh sync            take both from the tip of main into the work tree
#   release-files.sh commit MESSAGE  commit both onto the tip of main and push
#
# `sync` runs before every command that reads the pin on AWS: a run queued
# behind a publish (the `aws-release` concurrency group) checked out an older
# commit, whose pin would move prod back. Only this bot writes these files,
# and only one release job runs at a time, so the work tree's copies are
# always main's plus this job's change.
set -euo pipefail

# The jobs run as root in a container while the checkout belongs to the
# runner's user: without this, git refuses the repository ("dubious
# ownership").
git config --global --add safe.directory "${GITHUB_WORKSPACE:-$PWD}"

files=(terraform/prod.auto.tfvars.json terraform/prod.releases.json)

fetch_main() {
    git fetch --quiet --no-tags --depth=1 origin +refs/heads/main:refs/remotes/origin/main
}

sync() {
    fetch_main
    local file
    for file in "${files[@]}"; do
        if git cat-file -e "origin/main:$file" 2>/dev/null; then
            git show "origin/main:$file" >"$file"
        fi
    done
    git --no-pager diff --stat -- "${files[@]}"
}

commit() {
    local message=$1 saved file attempt
    saved=$(mktemp -d)
    for file in "${files[@]}"; do
        if [[ -f $file ]]; then
            cp "$file" "$saved/"
        fi
    done
    git config user.name 'github-actions[bot]'
    git config user.email '41898282+github-actions[bot]@users.noreply.github.com'
    for attempt in 1 2 3 4 5; do
        fetch_main
        git checkout --quiet --force --detach origin/main
        for file in "${files[@]}"; do
            if [[ -f "$saved/$(basename "$file")" ]]; then
                cp "$saved/$(basename "$file")" "$file"
                git add -- "$file"
            fi
        done
        if git diff --cached --quiet; then
            echo "main already has these release files: nothing to commit"
            return 0
        fi
        git commit --quiet -m "$message"
        if git push --quiet origin HEAD:refs/heads/main; then
            echo "pushed $(git rev-parse --short HEAD) to main: ${files[*]}"
            return 0
        fi
        echo "::warning::push to main refused (attempt $attempt), trying again on the new tip"
        sleep $((attempt * 5))
    done
    echo "::error::could not push ${files[*]} to main: prod is moved already, so commit these by hand:"
    for file in "${files[@]}"; do
        if [[ -f "$saved/$(basename "$file")" ]]; then
            echo "--- $file"
            cat "$saved/$(basename "$file")"
        fi
    done
    return 1
}

case "${1:-}" in
sync) sync ;;
commit)
    [[ $# -eq 2 ]] || { echo "usage: $0 commit MESSAGE" >&2; exit 2; }
    commit "$2"
    ;;
*)
    echo "usage: $0 sync | $0 commit MESSAGE" >&2
    exit 2
    ;;
esac
