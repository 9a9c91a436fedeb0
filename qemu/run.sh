#!/usr/bin/env bash
# Boots one kernel ELF in QEMU and maps its exit to a process status.
#
# Cargo calls this as the runner: `run.sh <kernel> [args...]`. The args become
# the kernel command line (test kernels read name filters from it).
#
#   exit 0  the kernel wrote the success code to isa-debug-exit
#   exit 1  failure code (a panic or failed test), triple fault or reset
#           (QEMU quits with 0 under -no-reboot), or timeout
#
# Environment:
#   QEMU_TIMEOUT  seconds before the run counts as hung (default 60)
#   QEMU_SMP      CPU count; overrides what the kernel asks for with
#                 apex_qemu::qemu_smp!(n) (default 1)
#   QEMU_MEMORY   RAM size (default 256M; at most 3G, the boot map covers 4 GiB)
#   QEMU_ARGS     extra QEMU arguments
set -u

kernel=${1:?usage: run.sh <kernel-elf> [kernel args...]}
shift

# Success code written by the kernel: QEMU exits with (0x10 << 1) | 1.
readonly SUCCESS=33

smp=${QEMU_SMP:-}
if [[ -z $smp ]]; then
    # A kernel built with qemu_smp!(n) carries the marker "apex-qemu:smp=n;".
    smp=$(grep -aoE 'apex-qemu:smp=[0-9]+;' "$kernel" | head -n1 | tr -dc '0-9')
fi
smp=${smp:-1}

defmt_out="$kernel.defmt"
: >"$defmt_out"

# shellcheck disable=SC2086 # QEMU_ARGS is split on purpose
timeout --foreground "${QEMU_TIMEOUT:-60}" \
    qemu-system-x86_64 \
    -kernel "$kernel" \
    -m "${QEMU_MEMORY:-256M}" \
    -smp "$smp" \
    -display none -monitor none -no-reboot \
    -serial stdio \
    -serial "file:$defmt_out" \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -append "$*" \
    ${QEMU_ARGS:-} \
    </dev/null
rc=$?

# defmt frames (COM2, kernels built with --features defmt) are decoded with
# defmt-print into <kernel>.defmt.txt, and shown when the kernel failed (or
# always with QEMU_DEFMT=1).
if [[ -s $defmt_out ]]; then
    if command -v defmt-print >/dev/null 2>&1; then
        defmt-print -e "$kernel" <"$defmt_out" >"$defmt_out.txt" 2>&1 || true
        if [[ $rc != "$SUCCESS" || ${QEMU_DEFMT:-0} == 1 ]]; then
            echo "--- defmt log ($defmt_out.txt) ---"
            cat "$defmt_out.txt"
        fi
    elif [[ $rc != "$SUCCESS" ]]; then
        echo "run.sh: $(wc -c <"$defmt_out") bytes of defmt frames in $defmt_out;" \
            "install defmt-print (cargo install defmt-print) to see them decoded here" >&2
    fi
fi

case $rc in
    "$SUCCESS") exit 0 ;;
    124) echo "run.sh: timeout after ${QEMU_TIMEOUT:-60}s: $kernel" >&2 ;;
    0) echo "run.sh: the VM reset (triple fault?) before reporting: $kernel" >&2 ;;
    35) echo "run.sh: the kernel reported failure: $kernel" >&2 ;;
    *) echo "run.sh: qemu exited with status $rc: $kernel" >&2 ;;
esac
exit 1
