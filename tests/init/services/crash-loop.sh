#!/bin/sh
# The payload of the crash-loop boots (crash-loop.toml). nacre_test=crash-stop: nothing to do
# (PID 1 stops the node). nacre_test=crash-give-up: wait until PID 1 gives up on "flaky" (its
# line in the kernel log), check it stays stopped (1 start + 3 restarts, no more) while "doomed"
# keeps running, then ask for an orderly power off.
bb=/bin/busybox
if $bb grep -q nacre_test=crash-stop /proc/cmdline; then exec $bb sleep 600; fi
fail() { echo "NACRE-CRASH-FAIL $*"; exit 1; }
i=0
until $bb dmesg | $bb grep -q "flaky: crash loop: .*giving up on it"; do
  i=$((i + 1)); [ $i -lt 300 ] || fail "PID 1 did not give up on flaky"
  $bb usleep 100000
done
$bb sleep 2
runs=$($bb wc -l < /tmp/flaky.runs)
[ "$runs" -eq 4 ] || fail "flaky ran $runs times"
$bb pidof sleep >/dev/null || fail "doomed (sleep 600) is not running"
echo "NACRE-GIVE-UP-OK runs=$runs"
/usr/lib/nacre/nacre-init poweroff || fail "nacre-init poweroff"
exec $bb sleep 600
