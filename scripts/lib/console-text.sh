#!/usr/bin/env bash
# Print a guest's serial console log as tests search it: first with the kernel's records (their
# six-digit timestamps) cut out of it, since the kernel prints to the same serial port and one of
# its records can land inside a line of nacre-init's; then the log as written. Carriage returns
# removed. A line is found in the output whether it is the init's (possibly cut) or the kernel's.
#
# Usage: console-text.sh CONSOLE.LOG
set -euo pipefail
tr -d '\r' <"${1:?usage: console-text.sh CONSOLE.LOG}" | perl -0pe 's/\[ *\d+\.\d{6}\] [^\n]*(\n|\z)//g'
tr -d '\r' <"$1"
