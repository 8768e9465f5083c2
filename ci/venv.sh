# Sourced by the ci/ scripts that run Python with pinned PyPI packages (ci/browser.sh,
# ci/bench.sh): one way to make the venv, so the two cannot drift apart.
#
# ensure_venv VENV REQUIREMENTS: creates VENV under target/ and installs REQUIREMENTS into it.
# The venv is rebuilt only when the pins change; the copy of the requirements is the stamp.
# Needs python3 with venv (Debian: python3-venv) and PyPI for the first install.
ensure_venv() {
    local venv=$1 requirements=$2
    if cmp -s "$requirements" "$venv/requirements.txt" 2>/dev/null; then
        return 0
    fi
    echo "installing $requirements into $venv" >&2
    rm -rf -- "$venv"
    python3 -m venv "$venv" || { echo "python3 -m venv failed: install the Debian package 'python3-venv'" >&2; return 1; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements" \
        || { echo "pip install -r $requirements failed" >&2; return 1; }
    cp "$requirements" "$venv/requirements.txt"
}
