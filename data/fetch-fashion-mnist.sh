#!/usr/bin/env bash
# Install Fashion-MNIST (60,000 train + 10,000 test 28x28 grayscale images, 10 classes) into
# data/fashion-mnist, or into the directory given as $1.
#
# Source: the Debian package `dataset-fashion-mnist` (MIT/Expat, Zalando SE), which ships the original
# gzipped IDX files under /usr/share/datasets/fashion-mnist/. We `apt-get download` the .deb (no install,
# nothing outside $DEST changes), unpack it with `dpkg-deb -x` into a temporary directory, and install the
# four files GUNZIPPED (raw IDX, 55 MB) because maxsup-data's FashionMnist reader reads raw IDX and so needs
# no gzip dependency. The package's copyright file is installed beside them.
#
# Verification of every file: exact size, IDX magic number (0x00000803 images / 0x00000801 labels), the
# sample count in the header (60000 train, 10000 test), and the sha256 of its uncompressed bytes.
# Idempotent: if the four files are already present and valid, nothing is downloaded.
# `apt-get update` is run (as root) only if the first download attempt fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/fashion-mnist}"

readonly package="dataset-fashion-mnist"
readonly package_dir="usr/share/datasets/fashion-mnist"
# name  magic  count  bytes  sha256-of-uncompressed-file
readonly manifest="
train-images-idx3-ubyte 00000803 60000 47040016 c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
train-labels-idx1-ubyte 00000801 60000 60008 bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
t10k-images-idx3-ubyte 00000803 10000 7840016 5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
t10k-labels-idx1-ubyte 00000801 10000 10008 0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
"

# Checks one file; prints why it is invalid (on stdout, for the caller to show) and fails if it is.
file_problem() {
    local path="$1" magic="$2" count="$3" bytes="$4" sha="$5" size header actual_sha
    [[ -f "$path" ]] || { echo "$path is missing"; return 1; }
    size=$(stat -c %s "$path")
    [[ "$size" == "$bytes" ]] || { echo "$path has $size bytes, expected $bytes"; return 1; }
    header=$(od -An -tx1 -N8 "$path" | tr -d ' \n')
    [[ "${header:0:8}" == "$magic" ]] || { echo "$path has magic 0x${header:0:8}, expected 0x$magic"; return 1; }
    [[ $((16#${header:8:8})) == "$count" ]] || {
        echo "$path announces $((16#${header:8:8})) samples, expected $count"
        return 1
    }
    actual_sha=$(sha256sum "$path" | cut -d' ' -f1)
    [[ "$actual_sha" == "$sha" ]] || { echo "$path has sha256 $actual_sha, expected $sha"; return 1; }
}

# Succeeds when all four files in $1 are valid; prints the first problem otherwise.
all_valid() {
    local dir="$1" name magic count bytes sha
    while read -r name magic count bytes sha; do
        [[ -n "$name" ]] || continue
        file_problem "$dir/$name" "$magic" "$count" "$bytes" "$sha" || return 1
    done <<<"$manifest"
}

if all_valid "$dest" >/dev/null; then
    echo "Fashion-MNIST already present and valid in $dest"
    exit 0
fi

for tool in apt-get dpkg-deb gunzip sha256sum od stat; do
    command -v "$tool" >/dev/null || { echo "error: '$tool' is required to fetch Fashion-MNIST" >&2; exit 1; }
done

mkdir -p "$dest"
# The work directory sits inside $dest so the final moves are atomic renames on one filesystem: an
# interrupted run never leaves a half-written file under a final name.
work="$(mktemp -d "$dest/.fetch.XXXXXX")"
# On failure, also remove $dest again if this run created it and left it empty.
trap 'rm -rf "$work"; rmdir "$dest" 2>/dev/null || true' EXIT

# As root, apt would try to drop to the `_apt` user, who cannot write into our private temp dir.
apt_opts=()
[[ "$(id -u)" == 0 ]] && apt_opts=(-o APT::Sandbox::User=root)

echo "Fetching $package with apt-get download ..."
if ! (cd "$work" && apt-get "${apt_opts[@]}" download -q "$package" >"$work/apt.log" 2>&1); then
    if [[ "$(id -u)" != 0 ]]; then
        cat "$work/apt.log" >&2
        echo "error: 'apt-get download $package' failed; run 'apt-get update' as root and retry" >&2
        exit 1
    fi
    echo "apt-get download failed; running apt-get update and retrying ..."
    apt-get update -q >"$work/update.log" 2>&1 || {
        cat "$work/update.log" >&2
        echo "error: apt-get update failed" >&2
        exit 1
    }
    (cd "$work" && apt-get "${apt_opts[@]}" download -q "$package" >"$work/apt.log" 2>&1) || {
        cat "$work/apt.log" >&2
        echo "error: 'apt-get download $package' failed even after apt-get update" >&2
        exit 1
    }
fi

debs=("$work"/"$package"_*.deb)
[[ -f "${debs[0]}" ]] || { echo "error: apt-get download produced no $package .deb in $work" >&2; exit 1; }
echo "Unpacking $(basename "${debs[0]}") ..."
dpkg-deb -x "${debs[0]}" "$work/root"

while read -r name _; do
    [[ -n "$name" ]] || continue
    gz="$work/root/$package_dir/$name.gz"
    [[ -f "$gz" ]] || { echo "error: the package has no $package_dir/$name.gz" >&2; exit 1; }
    gunzip -c "$gz" >"$work/$name"
done <<<"$manifest"

if ! problem=$(all_valid "$work"); then
    echo "error: the downloaded package's data is not the expected Fashion-MNIST: $problem" >&2
    exit 1
fi

while read -r name _; do
    [[ -n "$name" ]] || continue
    mv -f "$work/$name" "$dest/$name"
done <<<"$manifest"
copyright="$work/root/usr/share/doc/$package/copyright"
[[ -f "$copyright" ]] && cp "$copyright" "$dest/copyright"
# 55 MB of data must never be committed by accident.
[[ -f "$dest/.gitignore" ]] || printf '*\n' >"$dest/.gitignore"

if ! problem=$(all_valid "$dest"); then
    echo "error: after installing, $problem" >&2
    exit 1
fi
echo "Fashion-MNIST installed in $dest (raw IDX: 60000 train + 10000 test images, verified)"
