# Shared by the CLI test scripts (sourced): counters and the two kinds of check.
pass=0 fail=0

check() {  # name, condition (a command)
    local name=$1
    shift
    if "$@"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL $name"
    fi
}

expect() {  # name, expected exit, expected stderr substring, command...
    local name=$1 want_rc=$2 want_msg=$3
    shift 3
    local err rc
    err=$("$@" 2>&1 >/dev/null)
    rc=$?
    if [[ $rc == "$want_rc" && $err == *"$want_msg"* ]]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL $name: exit $rc (want $want_rc), stderr: $err (want: $want_msg)"
    fi
}
