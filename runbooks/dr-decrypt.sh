#!/usr/bin/env bash
# dr-decrypt.sh: read a lethe snapshot without lethe (runbooks/disaster-recovery.md).
#
# Reads lethe.manifest.v4 snapshots (snapshots/<id>.json.gz, a tree: the manifest lists
# segment objects, segments/<aa>/<32 hex>.json.gz, each listing the cells of one table,
# tenant and period), lethe.manifest.v3 snapshots (cells listed in the manifest itself) and
# lethe.keys-export.v2 exports, with stock tools only: age (the dimension keys are wrapped
# to the master key), openssl >= 3.0 (Ed25519 signatures, X25519, ChaCha20, Poly1305), jq,
# gzip, xxd, awk, grep and GNU coreutils. No lethe code, no Node.js. docs/format.md
# specifies every byte.
#
# Nothing in a manifest is used before it is authenticated: it is decompressed into a
# private temporary directory (removed on exit) and its Ed25519 signature over the
# uncompressed body must verify under a public key you give with --signing-key (the backup
# signing key's public half, escrowed with the master key; never a key found in the bucket
# or a keys export); it must be the snapshot its file name says; and no other signed
# manifest beside it may follow it (so an old snapshot is never taken for the newest)
# unless --not-latest says so. Every later read comes from that verified copy.
#
# Nothing in a segment object is used before it is authenticated either: the signed
# manifest lists its byte size and sha256. It is copied into the private directory (never
# more than one byte past that size), and the copy's size and sha256 must be the listed
# ones before gzip reads a byte of it; it is then inflated with a cap (64 KiB plus 4 KiB per
# cell it lists: a planted gzip bomb is never inflated past that), and its header must name
# the segment the manifest lists, every cell must belong to it (same table and tenant, id
# under the segment's), in strictly increasing id order, and the cell, row and plaintext
# byte counts must add up to the manifest's. Its cells are then used as v3's are.
#
# Decrypts one cell to PostgreSQL COPY text, lists a snapshot's cells, or prints the SQL
# that recreates the snapshot's tables. A cell's key is derived from its encapsulation's
# ephemeral public key E and its dimension keys D1..Dk (docs/format.md):
#   Z_i = X25519(d_i, E)                 openssl pkeyutl -derive
#   prk = HMAC-SHA-256("lethe.cell-key.v1", Z_1 ‖ … ‖ Z_k ‖ E ‖ "D1\n" ‖ … ‖ "Dk\n")
#   K   = HMAC-SHA-256(prk, "lethe.cell.v1\n" ‖ cell id ‖ 0x01)
#   cell = ChaCha20-Poly1305(K, zero nonce): ciphertext ‖ tag
# The ciphertext's sha256 is checked against the manifest, and its Poly1305 tag under K,
# before a single byte is decrypted: `openssl enc -chacha20` does not check tags itself.
#
# Secrets. Dimension private keys, the shared secrets Z and the tuple key prk never touch
# disk or argv: they live in bash variables and reach programs only through pipes and
# process substitutions (`-inkey <(printf …)`, read from /dev/fd/N); printf is a bash
# builtin, so nothing is exec'd with them as arguments. (Never here-strings or heredocs for
# them: older bash writes those to temporary files.) HMAC-SHA-256 is computed from its
# definition with sha256sum and xxd, so no HMAC key is ever an argument. A temp file, even
# on tmpfs, can be swapped out and outlives a kill -9; a pipe holds a secret only while both
# ends are alive. The master key is read from the escrow file given, where it already is.
#
# ONE EXCEPTION: openssl takes a raw cipher key only as an argument, so each cell's own key
# K (and the Poly1305 one-time key derived from it) is in the argv of `openssl enc` and
# `openssl mac` for the few milliseconds they run, where other users of this host can see
# it in the process list. K opens that one cell and nothing else (every cell has its own
# key, derived one way from prk). Run a recovery on a host with no other users.
#
# Exit codes: 0 ok, 1 unexpected failure, 2 usage (also: a manifest, export or
# encapsulation of a format this script does not read), 3 a required tool is missing,
# 4 not found (cell, key, file, segment object), 5 crypto-shredded (a dimension key is not
# in the export), 6 integrity (signature, sha256, size, tag or recipient mismatch, a
# segment that is not what the manifest lists, a low-order point, not the newest
# snapshot), 7 a key does not open (wrong master key or export).
set -euo pipefail
umask 077

readonly PROG=${0##*/}
readonly MANIFEST_V4='lethe.manifest.v4'
readonly MANIFEST_V3='lethe.manifest.v3'
readonly SEGMENT_FORMAT='lethe.segment.v1'
# A segment object inflates to at most this, plus this per cell it lists (src/manifest/read.ts):
# a cell line is a few hundred bytes.
readonly SEGMENT_BASE_BYTES=65536 SEGMENT_BYTES_PER_CELL=4096
readonly EXPORT_FORMAT='lethe.keys-export.v2'
readonly CELL_KEY_SALT='lethe.cell-key.v1'
readonly CELL_KEY_INFO=$'lethe.cell.v1\n'
# DER SubjectPublicKeyInfo of an X25519 key, up to the 32 raw bytes (RFC 8410).
readonly X25519_SPKI_PREFIX='302a300506032b656e032100'
# openssl's ChaCha20 IV: 32-bit little-endian block counter, then the 12-byte nonce (zero).
readonly IV_BLOCK0='00000000000000000000000000000000'
readonly IV_BLOCK1='01000000000000000000000000000000'
readonly TAG_BYTES=16

usage() {
  cat <<EOF
usage:
  $PROG --signing-key PUB --master-key FILE --manifest FILE --objects DIR --keys-export FILE --cell CELL_ID [--out FILE]
  $PROG --signing-key PUB --list --manifest FILE --objects DIR [--table NAME] [--tenant ID]
  $PROG --signing-key PUB --schema-sql pre|post --manifest FILE

  --manifest FILE  a snapshot manifest, snapshots/<id>.json.gz (lethe.manifest.v4 or v3)
  --cell ID        decrypt one cell (ids from --list) to COPY text, on stdout or into
                   --out FILE (written only when everything checked out; never overwritten)
  --objects DIR    local copy of the bucket (or its prefix): DIR/segments/..., DIR/packs/...
                   (--list needs it for a v4 snapshot, whose cells are in its segments)
  --keys-export    output of \`lethe keys export\` (dimension keys wrapped to the master key)
  --master-key     the escrowed master age identity file
  --list           print the snapshot's cells: id<TAB>table<TAB>rows, one per line
  --schema-sql     print the SQL that creates the snapshot's tables before loading (pre),
                   or adds keys, indexes and sequence positions after loading (post)
  --signing-key    the backup signing key's public half (PEM, backup-signing.key.pub from
                   \`lethe init\`), from your escrow; repeat it for keys retired by a rotation.
                   Required: the manifest's signature is checked before anything in it is used
  --not-latest     read a snapshot although a newer signed one follows it in the same
                   directory (a point-in-time restore on purpose)

Each cell's own key is briefly in the argv of openssl (see the header of this script):
run a recovery on a host with no other users.

exit codes: 0 ok, 2 usage or unsupported format, 3 missing tool, 4 not found,
            5 crypto-shredded, 6 integrity (signature, sha256, size, tag or recipient
            mismatch, a segment that is not what the manifest lists, low-order point,
            not the newest snapshot), 7 key does not open, 1 other
EOF
}

die() {
  local code=$1
  shift
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit "$code"
}

warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }

need_tools() {
  local tool missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if ((${#missing[@]} > 0)); then
    die 3 "required tool(s) not found on PATH: ${missing[*]}; install them (Debian/Ubuntu: apt-get install age jq openssl gzip xxd gawk coreutils)"
  fi
}

# Ed25519 with -rawin, X25519 derivation and `openssl mac` need OpenSSL 3 (not LibreSSL).
need_openssl3() {
  local version
  version=$(openssl version 2>/dev/null || true)
  [[ $version =~ ^OpenSSL\ ([0-9]+)\. ]] && ((BASH_REMATCH[1] >= 3)) ||
    die 3 "OpenSSL >= 3.0 is required (found: ${version:-none}); install it (Debian/Ubuntu: apt-get install openssl)"
}

need_file() {
  [[ -f $2 && -r $2 ]] || die 4 "$1 $2 does not exist or is not readable"
}

# A bucket key from a manifest, as a path under --objects. Refuses anything that could
# leave the directory, although the manifest is signed: a signature proves who wrote it,
# not that the writer was careful. `object_path KEY VAR` sets VAR instead of printing (no
# subshell: the segment checks call it once per segment).
object_path() {
  local key=$1
  case "/$key/" in
    *'/../'* | *'/./'* | *'//'*) die 6 "object key ${key@Q} in the manifest is not a plain relative path" ;;
  esac
  [[ $key != /* ]] || die 6 "object key ${key@Q} in the manifest is absolute"
  if (($# > 1)); then printf -v "$2" '%s/%s' "$OBJECTS" "$key"; else printf '%s/%s' "$OBJECTS" "$key"; fi
}

sha256_of() { sha256sum | { read -r sum _ && printf '%s' "$sum"; }; }

# entry_line FILE ID NEXT: the line of FILE that is lethe's entry `{"id":"ID","NEXT":...}`,
# without its trailing comma, or nothing. lethe writes one entry per line and ids are
# percent-encoded (no quotes or backslashes), so a fixed-string grep finds it in a
# multi-GB file without parsing it all; NEXT, the member lethe writes after the id, tells
# a cell or a segment (`table`: v3 manifests list cells, v4 manifests segments, never both)
# from an encapsulation (`tenant`) or an exported key (`kind`).
entry_line() {
  local line
  line=$(grep -F -m 1 -e "{\"id\":\"$2\",\"$3\":" -- "$1" || true)
  # (Not ${line%,}: bash pattern removal is quadratic on a multi-MB line.)
  [[ $line != *, ]] || line=${line:0:${#line}-1}
  printf '%s' "$line"
}

# section NAME: the entries of the manifest's array member NAME (cells in v3, segments in
# v4, encapsulations), one JSON object per line, streamed from the verified copy.
section() {
  awk -v start="\"$1\":[" '
    on && ($0 == "]," || $0 == "]") { exit }
    on { sub(/,$/, ""); print }
    $0 == start { on = 1 }' "$PLAIN"
}

# manifest_entry ID NEXT SECTION FILTER: FILTER (jq, raw output) of the manifest entry
# whose .id is ID in SECTION, or nothing. The signed bytes are as lethe laid them out, so
# the grep finds it; the streamed section is the fallback.
manifest_entry() {
  local id=$1 next=$2 name=$3 filter=$4 line out
  line=$(entry_line "$PLAIN" "$id" "$next")
  if [[ -n $line ]] &&
    out=$(jq -r --arg id "$id" "select(type == \"object\" and .id == \$id and has(\"$next\")) | $filter" <<<"$line" 2>/dev/null) &&
    [[ -n $out ]]; then
    printf '%s\n' "$out"
    return 0
  fi
  section "$name" | jq -rn --arg id "$id" "first(inputs | select(.id == \$id)) // empty | $filter"
}

# export_entry ID FILTER: the same for a key of the keys export, which is not signed and
# may have been reformatted: then a full jq parse decides.
export_entry() {
  local id=$1 filter=$2 line out
  line=$(entry_line "$KEYS_EXPORT" "$id" kind)
  if [[ -n $line ]] &&
    out=$(jq -r --arg id "$id" "select(type == \"object\" and .id == \$id) | $filter" <<<"$line" 2>/dev/null) &&
    [[ -n $out ]]; then
    printf '%s\n' "$out"
    return 0
  fi
  jq -r --arg id "$id" "first(.dimensionKeys[] | select(.id == \$id)) // empty | $filter" "$KEYS_EXPORT"
}

# header_value NAME [FILE]: the JSON value of a manifest member on a line of its own,
# `"NAME":<json>,` (snapshot, schema, totals), read without parsing the cell list.
header_value() {
  local file=${2:-$PLAIN} line
  line=$(grep -m 1 -e "^\"$1\":" -- "$file" || true)
  line=${line:${#1}+3}
  [[ $line != *, ]] || line=${line:0:${#line}-1}
  jq -ce '.' <<<"$line" 2>/dev/null || die 6 "manifest $MANIFEST has no readable \"$1\" line"
}

# --- the manifest

# legacy_format FILE: the format of a manifest lethe wrote before v3 (uncompressed
# snapshots/<id>.json, lethe.manifest.v1 or v2), or nothing.
legacy_format() {
  local magic first
  magic=$(head -c 2 -- "$1" | xxd -p)
  [[ $magic != 1f8b ]] || return 0
  IFS= read -r first <"$1" || true
  [[ $first =~ ^\{\"format\":\"(lethe\.manifest\.v[12])\",$ ]] && printf '%s' "${BASH_REMATCH[1]}"
  return 0
}

# A manifest is checked only after it is inflated, so a planted gzip bomb must not fill the
# disk first: lethe's manifests inflate about 6.5 times (JSON lines at gzip level 1);
# anything past INFLATE_RATIO times the stored size (plus 1 MiB) is refused unread.
INFLATE_RATIO=64

# inflate FILE DEST: decompresses a stored manifest into DEST (private: umask 077, in WORK).
# Prints why and returns 1 when FILE is not one complete gzip stream, or inflates past the cap.
inflate() {
  local limit status errexit=$-
  limit=$(($(stat -L -c '%s' -- "$1") * INFLATE_RATIO + 1048576))
  # gzip's own status, not the pipeline's (head stops it early on a bomb); errexit as it was.
  set +e
  gzip -dc <"$1" 2>/dev/null | head -c "$((limit + 1))" >"$2"
  status=${PIPESTATUS[0]}
  [[ $errexit != *e* ]] || set -e
  if (($(stat -L -c '%s' -- "$2") > limit)); then
    : >"$2"
    echo "it inflates to more than $limit bytes, $INFLATE_RATIO times its stored size: no lethe manifest does (they inflate about 6.5 times), so it was not read further"
    return 1
  fi
  ((status == 0)) && return 0
  echo 'it is not one complete gzip file (truncated, corrupted, or not a lethe snapshots/<id>.json.gz)'
  return 1
}

# manifest_format PLAIN: the format an uncompressed manifest's first line names
# (`{"format":"lethe.manifest.vN",`), or nothing. Not authenticated: the signature check
# decides whether to believe it.
manifest_format() {
  local first
  IFS= read -r first <"$1" || true
  [[ $first =~ ^\{\"format\":\"(lethe\.manifest\.v[0-9]+)\",$ ]] && printf '%s' "${BASH_REMATCH[1]}"
  return 0
}

# signature_problem PLAIN: prints nothing and returns 0 when PLAIN (an uncompressed
# manifest) is a lethe.manifest.v4 or v3 whose body (every byte before its last line)
# hashes to the sha256 its signature covers and whose Ed25519 signature over
# `<format>\n<that sha256>\n` (the format of its first line) verifies under one of the
# --signing-key files; otherwise prints why and returns 1.
signature_problem() {
  local file=$1 first format last signed value actual key
  format=$(manifest_format "$file")
  if [[ $format != "$MANIFEST_V4" && $format != "$MANIFEST_V3" ]]; then
    IFS= read -r first <"$file" || true
    echo "it is not a $MANIFEST_V4 or $MANIFEST_V3 manifest (first line: ${first:0:80})"
    return 1
  fi
  [[ $(tail -c 1 -- "$file" | xxd -p) == 0a ]] ||
    { echo 'it does not end with a complete line: it is truncated'; return 1; }
  last=$(tail -n 1 -- "$file")
  [[ $last =~ ^\"signature\":\{.*\"sha256\":\"([0-9a-f]{64})\" ]] ||
    { echo 'it has no signature line: it is truncated or not a complete manifest'; return 1; }
  signed=${BASH_REMATCH[1]}
  [[ $last =~ \"value\":\"([A-Za-z0-9+/=]+)\" ]] || { echo 'its signature line is malformed'; return 1; }
  value=${BASH_REMATCH[1]}
  actual=$(head -n -1 -- "$file" | sha256_of)
  [[ $actual == "$signed" ]] ||
    { echo "its body hashes to $actual but its signature covers $signed: it was edited after signing, or is corrupted"; return 1; }
  # Public bytes: `pkeyutl -rawin` reads its input and signature from real files.
  printf '%s\n%s\n' "$format" "$actual" >"$WORK/signed-message"
  printf '%s' "$value" | base64 -d >"$WORK/signature" 2>/dev/null || { echo 'its signature is not base64'; return 1; }
  for key in "${SIGNING_KEYS[@]}"; do
    openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$WORK/signed-message" -sigfile "$WORK/signature" >/dev/null 2>&1 && return 0
  done
  echo "its signature does not verify under the signing key(s) given (${SIGNING_KEYS[*]})"
  return 1
}

# authenticate_manifest: the checks every mode runs before it uses anything in the manifest.
# 0. Format: a manifest of an older lethe (or one that says it is of a newer format) is
#    refused, naming the script that reads it.
# 1. The Ed25519 signature over the uncompressed body, under a key from your escrow (never
#    one from the bucket). The body is decompressed once, to PLAIN, and only PLAIN is read.
# 2. The snapshot id inside equals the file name: a validly signed manifest of another
#    snapshot copied over this name is refused.
# 3. Freshness: no other validly signed manifest in the same directory names this one as its
#    previous snapshot (fetch the whole snapshots/ prefix: it is small). An attacker who
#    cannot sign cannot forge a newer one; one who deletes newer manifests is stopped by
#    object lock, or by comparing with your own record of the latest snapshot id.
# 4. The link to the previous snapshot: when its manifest is beside this one, its sha256
#    (of the stored object) must be the one this manifest names.
authenticate_manifest() {
  ((${#SIGNING_KEYS[@]} > 0)) ||
    die 2 "--signing-key FILE is required: the backup signing key's public half from your escrow (backup-signing.key.pub, written by lethe init). The manifest's signature is checked before anything in it is used; a key found in the bucket or in a keys export proves nothing"
  local key why id base dir other previous newer=() prev_id prev_sha prev_file actual legacy
  for key in "${SIGNING_KEYS[@]}"; do
    need_file 'signing key' "$key"
    grep -q -- '-----BEGIN PUBLIC KEY-----' "$key" ||
      die 2 "--signing-key $key is not a PEM public key; give the .pub file (never the private key)"
  done
  legacy=$(legacy_format "$MANIFEST")
  [[ -z $legacy ]] ||
    die 2 "manifest $MANIFEST is $legacy, written by a lethe from before the $MANIFEST_V3 cell format; this script reads only $MANIFEST_V4 and $MANIFEST_V3 (snapshots/<id>.json.gz). Read it with the runbooks/dr-decrypt.sh of the lethe version that wrote it (keep that copy in the escrow too), or with that lethe"
  why=$(inflate "$MANIFEST" "$PLAIN") ||
    die 6 "manifest $MANIFEST cannot be trusted, so nothing in it was used: $why. Fetch it again from the bucket; if it persists, the stored manifest was altered: use another snapshot"
  # A format of a newer lethe is named as such (exit 2), not taken for damage. Unsigned as
  # yet, so it decides only the message: either way nothing in the manifest is used.
  FORMAT=$(manifest_format "$PLAIN")
  [[ -z $FORMAT || $FORMAT == "$MANIFEST_V4" || $FORMAT == "$MANIFEST_V3" ]] ||
    die 2 "manifest $MANIFEST says it is $FORMAT, which this script does not read (it reads $MANIFEST_V4 and $MANIFEST_V3); nothing in it was used. Read it with the runbooks/dr-decrypt.sh of the lethe release that wrote it, or with that lethe"
  why=$(signature_problem "$PLAIN") ||
    die 6 "manifest $MANIFEST cannot be trusted, so nothing in it was used: $why. Fetch it again from the bucket; if it persists, the stored manifest was altered: use another snapshot"
  id=$(header_value snapshot | jq -r '.id')
  base=$(basename -- "$MANIFEST" .json.gz)
  [[ $id == "$base" ]] ||
    die 6 "manifest $MANIFEST is signed, but names snapshot $id, not $base: a manifest stored under another snapshot's name"
  dir=$(dirname -- "$MANIFEST")
  for other in "$dir"/*.json.gz; do
    [[ -f $other && ! $other -ef $MANIFEST ]] || continue
    # Its second line, `"snapshot":{...,"previous":{"id":...}}`: gunzip stops when head does.
    previous=$({ gzip -dc <"$other" 2>/dev/null || true; } | head -n 2 | tail -n 1) || true
    [[ $previous == '"snapshot":'*"\"previous\":{\"id\":\"$id\""* ]] || continue
    if why=$(inflate "$other" "$WORK/other.json" && signature_problem "$WORK/other.json"); then
      newer+=("$(basename -- "$other" .json.gz)")
    else
      warn "$other claims to follow snapshot $id but cannot be trusted ($why); ignored"
    fi
    rm -f -- "$WORK/other.json"
  done
  if ((${#newer[@]} > 0)); then
    ((NOT_LATEST == 1)) ||
      die 6 "snapshot $id is not the newest: ${newer[*]} follows it, signed. Use the newest snapshot, or pass --not-latest to read this older one on purpose"
    warn "snapshot $id is not the newest (${newer[*]} follows it); reading it as asked (--not-latest)"
  fi
  IFS=$'\t' read -r prev_id prev_sha < <(header_value snapshot | jq -r '[.previous.id // "", .previous.sha256 // ""] | @tsv')
  if [[ -n $prev_id ]]; then
    # The first v3 snapshot after an upgrade follows an uncompressed v2 manifest.
    for prev_file in "$dir/$prev_id.json.gz" "$dir/$prev_id.json"; do
      [[ -f $prev_file ]] || continue
      actual=$(sha256_of <"$prev_file")
      [[ $actual == "$prev_sha" ]] ||
        die 6 "the previous snapshot's manifest $prev_file hashes to $actual, but $id names $prev_sha: one of the two was altered"
    done
  fi
}

# --- segments (lethe.manifest.v4): the cells of an authenticated manifest's tree

need_objects() {
  [[ -n $OBJECTS ]] ||
    die 2 "--objects DIR is required: the cells of a $MANIFEST_V4 snapshot are listed in its segment objects (DIR/segments/...); fetch them as runbooks/disaster-recovery.md step 1 says"
  [[ -d $OBJECTS ]] || die 4 "objects directory $OBJECTS does not exist"
}

# jq: a segment entry of the manifest as `key<TAB>sha256<TAB>size<TAB>cells`, or `-` when
# it is not one lethe writes. Signed, but checked before bash computes with it.
readonly SEGMENT_FIELDS='first(select(type == "object"
    and ([.id, .table, .period, .snapshot, .key, .sha256] | all(type == "string" and length > 0))
    and (.tenant | type == "string" or . == null)
    and (.key | test("^segments/[0-9a-f]{2}/[0-9a-f]{32}\\.json\\.gz$"))
    and (.sha256 | test("^[0-9a-f]{64}$"))
    and ([.size, .cells, .rows, .bytesPlain] | all(type == "number" and . == floor and . >= 0 and . < 1e15))
    and .size > 0 and .cells < 1e9)
  | [.key, .sha256, .size, .cells] | @tsv) // "-"'

# SEGMENT_BATCH: segments checked per round (one jq, one sha256sum, one stat per round, so a
# listing of thousands of segments does not start a jq per segment); it also bounds what
# WORK holds at once: at most this many segment copies and their inflated text.
readonly SEGMENT_BATCH=256

# check_segments SELECTED EMIT OUT: the cells of the segments that SELECTED lists (two lines
# per segment: its SEGMENT_FIELDS, then its entry in the signed manifest, one line of JSON),
# checked, into OUT (`-`: stdout) in that order: with EMIT `cells` one JSON object per line,
# with `list` as --list prints them. A segment that cannot be used is reported (segment_failed)
# and none of its cells is in OUT; SEGMENTS_TRIED, SEGMENTS_MISSING (object not under
# --objects, 4) and SEGMENTS_DAMAGED (not what the manifest lists, 6) count them.
#
# The manifest is signed, but a segment object is only as good as the copy of it you have:
# it is copied into WORK (at most one byte past the size the manifest lists, so a planted
# huge file fills nothing), and the copy's size and sha256 must be the manifest's before
# gzip reads a byte of it. It is inflated with a cap of SEGMENT_BASE_BYTES plus
# SEGMENT_BYTES_PER_CELL per listed cell (lethe's reader's), so even a gzip bomb that lethe
# itself had signed (a bug, or a misused key) is not inflated past that. Then, like lethe's
# reader: the layout, the header naming the segment the manifest lists, every cell a lethe
# cell entry of the segment's table and tenant whose id is under the segment's, ids in
# strictly increasing byte order, and the cell, row and plaintext byte counts adding up to
# the manifest's. Only WORK's copies are read, so nothing can change them between check
# and use.
SEGMENTS_TRIED=0 SEGMENTS_MISSING=0 SEGMENTS_DAMAGED=0
check_segments() {
  local selected=$1 emit=$2 out=$3 fields entry batch_fields=() batch_entries=()
  SEGMENTS_TRIED=0 SEGMENTS_MISSING=0 SEGMENTS_DAMAGED=0
  [[ $out == - ]] || : >"$out"
  while IFS= read -r fields && IFS= read -r entry; do
    batch_fields+=("$fields")
    batch_entries+=("$entry")
    if ((${#batch_entries[@]} == SEGMENT_BATCH)); then
      check_segment_batch "$emit" "$out"
      batch_fields=() batch_entries=()
    fi
  done <"$selected"
  ((${#batch_entries[@]} == 0)) || check_segment_batch "$emit" "$out"
}

# segment_refused RC INDEX WHY: reports segment INDEX of the batch (check_segment_batch's
# arrays) as unusable, and counts it.
segment_refused() {
  local segment key
  IFS=$'\t' read -r segment key < <(jq -r '[.id, .key] | @tsv' <<<"${batch_entries[$2]}" 2>/dev/null || true)
  segment_failed "$1" "$segment" "$key" "$3"
  if (($1 == 4)); then SEGMENTS_MISSING=$((SEGMENTS_MISSING + 1)); else SEGMENTS_DAMAGED=$((SEGMENTS_DAMAGED + 1)); fi
}

# check_segment_batch EMIT OUT: check_segments for the segments in batch_fields and
# batch_entries (its caller's): per segment one bounded copy and one capped inflate, the
# rest (sizes, sha256s, line counts, and every JSON check) once for the whole batch.
check_segment_batch() {
  local emit=$1 out=$2 dir=$WORK/batch i n=${#batch_entries[@]} key sha size cells path limit status errexit=$-
  local keys=() shas=() sizes=() caps=() copied=() actual=() sums=() inflated=() plains=() counts=() parts=() line why
  rm -rf -- "$dir"
  mkdir -- "$dir"
  SEGMENTS_TRIED=$((SEGMENTS_TRIED + n))
  for ((i = 0; i < n; i++)); do
    if [[ ${batch_fields[i]} == - ]]; then
      segment_refused 6 "$i" 'the manifest lists it with members that are not those of a lethe segment entry'
      continue
    fi
    IFS=$'\t' read -r key sha size cells <<<"${batch_fields[i]}"
    keys[i]=$key shas[i]=$sha sizes[i]=$size caps[i]=$((SEGMENT_BASE_BYTES + cells * SEGMENT_BYTES_PER_CELL))
    object_path "$key" path
    if [[ ! -f $path ]]; then
      segment_refused 4 "$i" "its object $key is missing under $OBJECTS; copy it from the bucket (aws s3 cp s3://BUCKET/$key $path)"
      continue
    fi
    head -c "$((size + 1))" -- "$path" >"$dir/$i.gz"
    copied+=("$i")
  done
  ((${#copied[@]} > 0)) || return 0
  # The copies' sizes, then their sha256s: one stat and one sha256sum for the batch.
  mapfile -t actual < <(cd -- "$dir" && stat -L -c '%s' -- "${copied[@]/%/.gz}")
  mapfile -t sums < <(cd -- "$dir" && sha256sum -- "${copied[@]/%/.gz}")
  ((${#actual[@]} == ${#copied[@]} && ${#sums[@]} == ${#copied[@]})) ||
    die 1 "could not read the copies of the segment objects in $dir"
  for ((n = 0; n < ${#copied[@]}; n++)); do
    i=${copied[n]} size=${sizes[i]}
    if ((actual[n] != size)); then
      ((actual[n] < size)) && why="the object is ${actual[n]} bytes, the manifest lists $size: the copy is truncated, or the object was replaced" ||
        why="the object is larger than the $size bytes the manifest lists: it was modified or replaced after the backup"
      segment_refused 6 "$i" "$why"
      continue
    fi
    # sha256sum prints `<hash>  <name>` (a name with a backslash is escaped: never one of these).
    if [[ ${sums[n]%% *} != "${shas[i]}" ]]; then
      segment_refused 6 "$i" "the object hashes to ${sums[n]%% *}, the manifest lists ${shas[i]}: it was modified or replaced after the backup"
      continue
    fi
    # Authentic from here on: the bytes the backup stored. Still checked, never assumed.
    limit=${caps[i]}
    set +e
    gzip -dc <"$dir/$i.gz" 2>/dev/null | head -c "$((limit + 1))" >"$dir/$i.json"
    status=${PIPESTATUS[0]}
    [[ $errexit != *e* ]] || set -e
    if ((status != 0)); then
      # Unless it was cut off at the cap (head stops gzip early): the size check below says so.
      (($(stat -L -c '%s' -- "$dir/$i.json") > limit)) ||
        { segment_refused 6 "$i" 'the object is not one complete gzip file'; continue; }
    fi
    inflated+=("$i")
  done
  ((${#inflated[@]} > 0)) || return 0
  # The inflated sizes (the cap) and newline counts: one stat and one wc for the batch.
  mapfile -t actual < <(cd -- "$dir" && stat -L -c '%s' -- "${inflated[@]/%/.json}")
  mapfile -t counts < <(cd -- "$dir" && wc -l -- "${inflated[@]/%/.json}")
  ((${#actual[@]} == ${#inflated[@]} && ${#counts[@]} >= ${#inflated[@]})) ||
    die 1 "could not read the inflated segment objects in $dir"
  # The stream jq reads, per segment: `{"i":INDEX,"n":NEWLINES,"e":ENTRY}`, its text, and a
  # newline of ours. The line after its NEWLINES lines is then empty when the text ends with
  # a newline, and the text's unterminated last line otherwise: jq never loses its place.
  printf '\n' >"$dir/nl"
  for ((n = 0; n < ${#inflated[@]}; n++)); do
    i=${inflated[n]} line=${counts[n]}
    line=${line#"${line%%[! ]*}"}
    if ((actual[n] > caps[i])); then
      segment_refused 6 "$i" "it inflates to more than the ${caps[i]} bytes its $(((caps[i] - SEGMENT_BASE_BYTES) / SEGMENT_BYTES_PER_CELL)) cell(s) allow, so it was not read further"
      continue
    fi
    printf '{"i":%d,"n":%d,"e":%s}\n' "$i" "${line%% *}" "${batch_entries[i]}" >"$dir/$i.head"
    parts+=("$i.head" "$i.json" nl)
  done
  ((${#parts[@]} > 0)) || return 0
  # shellcheck disable=SC2016 # $-names below are jq variables
  (cd -- "$dir" && cat -- "${parts[@]}") | jq -nrR --argjson count "$((${#parts[@]} / 3))" --arg format "$SEGMENT_FORMAT" --arg emit "$emit" '
    # jq 1.6 lets a `try` catch errors raised after it in the pipeline: confined to an array,
    # it catches only fromjson'"'"'s own. null (never a valid header or cell) means "not JSON".
    def parsed: [try fromjson catch null][0];
    def count: type == "number" and . == floor and . >= 0;
    def lethe_cell:
      type == "object"
      and (keys == ["bytesPlain", "dims", "enc", "id", "key", "length", "offset", "pack", "reused", "rows", "sha256", "table", "tenant"])
      and ([.id, .table, .key, .enc, .pack] | all(type == "string" and length > 0))
      and (.tenant | type == "string" or . == null)
      and (.dims | type == "array" and length > 0 and all(type == "string" and length > 0))
      and (.sha256 | type == "string" and test("^[0-9a-f]{64}$"))
      and (.offset | count) and (.bytesPlain | count) and (.length | count and . > 0) and (.rows | count and . > 0)
      and (.reused | type == "boolean");
    # The lines of one segment ($l, without their newlines; $ends: whether its text ends with
    # one) checked against its manifest entry $e: its cells as EMIT asks, or an error.
    def cells($l; $ends; $e):
      def fail($m): error($m);
      ($l | length) as $n
      | if ($ends | not) then fail("it does not end with a newline") else . end
      | if $n < 4 or $l[0] != "{\"format\":\"\($format)\"," or $l[2] != "\"cells\":[" or $l[$n - 1] != "]}"
           or ($l[1] | startswith("\"segment\":") and endswith(",") | not)
        then fail("it is not laid out as a \($format) object") else . end
      | ($l[1] | ltrimstr("\"segment\":") | .[0:-1] | parsed) as $h
      | if ($h | type != "object") or ($h | keys != ["id", "period", "snapshot", "table", "tenant"]) then
          fail("line 2: its header is not {id, table, tenant, period, snapshot}")
        elif [$h.id, $h.table, $h.tenant, $h.period, $h.snapshot] != [$e.id, $e.table, $e.tenant, $e.period, $e.snapshot] then
          fail("it describes segment \($h.id) (\($h.table), tenant \($h.tenant), period \($h.period)) of snapshot \($h.snapshot), not what the manifest lists: \($e.id) (\($e.table), tenant \($e.tenant), period \($e.period)) of snapshot \($e.snapshot)")
        else . end
      | (reduce range(3; $n - 1) as $i ({last: "", rows: 0, bytes: 0};
          $l[$i] as $line
          | (if $i == $n - 2 then $line
             elif ($line | endswith(",")) then $line[0:-1]
             else fail("line \($i + 1): a cell entry other than the last ends without a comma") end) as $t
          | ($t | parsed) as $c
          | if $c == null then fail("line \($i + 1): not JSON (one entry per line, a comma after each but the last)")
            elif ($c | lethe_cell | not) then fail("line \($i + 1): not a lethe cell entry")
            elif $c.table != $e.table or $c.tenant != $e.tenant or ($c.id | startswith($e.id + "/") | not) then
              fail("line \($i + 1): cell \($c.id) (\($c.table), tenant \($c.tenant)) does not belong to segment \($e.id)")
            elif $c.id <= .last then fail("line \($i + 1): cell \($c.id) is out of order or listed twice")
            else .last = $c.id | .rows += $c.rows | .bytes += $c.bytesPlain end)) as $sum
      | if $n - 4 != $e.cells or $sum.rows != $e.rows or $sum.bytes != $e.bytesPlain then
          fail("it lists \($n - 4) cells, \($sum.rows) rows and \($sum.bytes) plaintext bytes, the manifest \($e.cells), \($e.rows) and \($e.bytesPlain)")
        else [$l[3:$n - 1][] | rtrimstr(",") | if $emit == "list" then fromjson | [.id, .table, .rows] | @tsv else . end] end;
    range($count)
    | (input | fromjson) as $s
    | [range($s.n) | input] as $l
    | input as $last
    # `C<TAB>line` per cell, or `F<TAB>index<TAB>why as a JSON string` for a segment refused.
    | ([try {cells: cells($l; $last == "" and $s.n > 0; $s.e)} catch {why: .}][0]) as $r
    | if $r.cells != null then "C\t" + $r.cells[] else "F\t\($s.i)\t\($r.why | tojson)" end' >"$dir/checked" ||
    die 1 "jq could not check the segment objects of batch $dir; report it, with the jq version (jq --version)"
  # The cells in order into OUT; the refusals (few) reported.
  awk -v out="$out" -v refused="$dir/refused" '
    substr($0, 1, 2) == "C\t" { if (out == "-") print substr($0, 3); else print substr($0, 3) >>out; next }
    { print >refused }' "$dir/checked"
  if [[ -s $dir/refused ]]; then
    while IFS=$'\t' read -r _ i why; do
      segment_refused 6 "$i" "$(jq -r '.' <<<"$why")"
    done <"$dir/refused"
  fi
  rm -rf -- "$dir"
}

# segment_failed RC ID KEY WHY: reports a segment check_segments refused (RC 4 or 6).
segment_failed() {
  if (($1 == 4)); then
    printf '%s: error: segment %s of manifest %s: %s\n' "$PROG" "$2" "$MANIFEST" "$4" >&2
  else
    printf '%s: error: segment %s (%s) of manifest %s cannot be used, so none of its cells was: %s. Fetch it again from the bucket (aws s3 cp s3://BUCKET/%s %s); if it persists, the stored object was altered or damaged: read its cells from another snapshot\n' \
      "$PROG" "$2" "$3" "$MANIFEST" "$4" "$3" "$OBJECTS/$3" >&2
  fi
}

# cell_entry ID FILTER: FILTER (jq, raw output) of the cell ID of the authenticated
# manifest, or nothing. In v4, from its segment, the first three components of its id
# (`<table>/<tenant>/<period>`), fetched and checked; exits 4 or 6 when that segment cannot
# be used. Call as `line=$(cell_entry …) || exit`.
cell_entry() {
  local id=$1 filter=$2 segment entry
  if [[ $FORMAT == "$MANIFEST_V3" ]]; then
    manifest_entry "$id" table cells "$filter" || true
    return 0
  fi
  [[ $id =~ ^([^/]+/[^/]+/[^/]+)/ ]] || return 0
  segment=${BASH_REMATCH[1]}
  entry=$(manifest_entry "$segment" table segments 'tojson' || true)
  [[ -n $entry ]] || return 0
  jq -r "($SEGMENT_FIELDS), tojson" <<<"$entry" >"$WORK/segment.selected"
  check_segments "$WORK/segment.selected" cells "$WORK/segment.cells"
  ((SEGMENTS_DAMAGED == 0)) || exit 6
  ((SEGMENTS_MISSING == 0)) || exit 4
  jq -rn --arg id "$id" "first(inputs | select(.id == \$id)) // empty | $filter" <"$WORK/segment.cells" || true
}

# --- modes

# v4: every segment the filters select, checked one by one; the cells of each that checks
# out are listed, those of one that does not are reported (each, with the reason) and left
# out, and the exit code is 6 (or 4, when objects are only missing) once all were tried,
# so one damaged object neither hides the rest nor goes unnoticed.
list_cells() {
  if [[ $FORMAT == "$MANIFEST_V3" ]]; then
    section cells | jq -r --arg table "$TABLE" --arg tenant "$TENANT" '
      select(($table == "" or .table == $table) and ($tenant == "" or .tenant == $tenant))
      | [.id, .table, .rows] | @tsv'
    return
  fi
  need_objects
  section segments >"$WORK/segments"
  # Two lines per selected segment: its SEGMENT_FIELDS, then the entry itself.
  # shellcheck disable=SC2016 # $-names below are jq variables
  jq -r --arg table "$TABLE" --arg tenant "$TENANT" '
    select(($table == "" or .table == $table) and ($tenant == "" or .tenant == $tenant))
    | ('"$SEGMENT_FIELDS"'), tojson' "$WORK/segments" >"$WORK/selected" 2>/dev/null ||
    die 6 "manifest $MANIFEST is signed, but its segments list is not one JSON entry per line: lethe does not write it so; report it, and use another snapshot"
  # The cells go straight to stdout, in manifest order (only those of segments that check out).
  check_segments "$WORK/selected" list -
  local damaged=$SEGMENTS_DAMAGED missing=$SEGMENTS_MISSING tried=$SEGMENTS_TRIED
  ((damaged == 0)) ||
    die 6 "$damaged of the $tried segment(s) of manifest $MANIFEST cannot be used (each is named above); the cells of the others are listed"
  ((missing == 0)) ||
    die 4 "$missing of the $tried segment object(s) of manifest $MANIFEST are missing under $OBJECTS (each is named above); the cells of the others are listed"
}

# Mirrors lethe's schemaToDdl (src/mapping/schema-ddl.ts): tables without keys before the
# load, then constraints (keys, checks, then foreign keys), indexes and sequence positions.
schema_sql() {
  # shellcheck disable=SC2016 # $-names below are jq variables
  header_value schema | jq -r --arg part "$1" '
    def qi: "\"" + gsub("\""; "\"\"") + "\"";
    def ql: if test("\\\\") then "E'\''" + (gsub("'\''"; "'\'''\''") | gsub("\\\\"; "\\\\")) + "'\''"
            else "'\''" + gsub("'\''"; "'\'''\''") + "'\''" end;
    def seqopts: "INCREMENT BY \(.increment) MINVALUE \(.min) MAXVALUE \(.max) START WITH \(.start) CACHE \(.cache)"
                 + (if .cycle then " CYCLE" else " NO CYCLE" end);
    def rank: {"p": 0, "u": 1, "c": 2, "x": 3, "f": 4}[.type];
    . as $d
    | ($d.schema | qi) as $s
    | def name: $s + "." + qi;
    "SELECT pg_catalog.set_config('\''search_path'\'', \($s | ql), false);" as $path
    | if $part == "pre" then
        (if $d.schema != "public" then "CREATE SCHEMA IF NOT EXISTS \($s);" else empty end),
        $path,
        ($d.enums[] | "CREATE TYPE \(.name | name) AS ENUM (\(.labels | map(ql) | join(", ")));"),
        ($d.sequences[] | select(.identity | not) | "CREATE SEQUENCE \(.name | name) AS \(.type) \(seqopts);"),
        ($d.tables[] | .name as $t | "CREATE TABLE \($t | name) (\n" + ([.columns[] |
          "  \(.name | qi) \(.type)"
          + (if .collation != null then " COLLATE \(.collation | qi)" else "" end)
          + (if .generated != null then " GENERATED ALWAYS AS (\(.generated)) STORED" else "" end)
          + (if .identity != null then
               .name as $c
               | ([$d.sequences[] | select(.identity and .table == $t and .column == $c)][0]) as $seq
               | " GENERATED \(if .identity == "always" then "ALWAYS" else "BY DEFAULT" end) AS IDENTITY"
                 + (if $seq == null then "" else " (SEQUENCE NAME \($seq.name | name) \($seq | seqopts))" end)
             else "" end)
          + (if .default != null then " DEFAULT \(.default)" else "" end)
          + (if .notNull then " NOT NULL" else "" end)
        ] | join(",\n")) + "\n);"),
        ($d.sequences[] | select(.identity | not) | "ALTER SEQUENCE \(.name | name) OWNED BY \(.table | name).\(.column | qi);")
      elif $part == "post" then
        $path,
        ([$d.tables[] | .name as $t | .constraints[] | . + {table: $t}] as $all
         | ($all | map(select(.type != "f")) | sort_by(rank)[]), ($all[] | select(.type == "f"))
         | "ALTER TABLE \(.table | name) ADD CONSTRAINT \(.name | qi) \(.definition);"),
        ($d.tables[] | .name as $t | .indexes[]
         | "CREATE \(if .unique then "UNIQUE " else "" end)INDEX \(.name | qi) ON \($t | name) USING \(.using);"),
        ($d.sequences[] | (.column | qi) as $c | (if (.increment | startswith("-")) then "min" else "max" end) as $edge
         | "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence(\(.table | name | ql), \(.column | ql)), "
           + "COALESCE(\($edge)(\($c)), \(.start)), \($edge)(\($c)) IS NOT NULL) FROM \(.table | name);")
      else error("--schema-sql takes pre or post") end'
}

# --- key derivation. Functions below take and return secrets as hex in bash variables
# --- and stdout captured by $(...); never call them with output to a file.

# hmac_sha256 KEY_HEX: HMAC-SHA-256 (RFC 2104) of stdin under a key of at most 64 bytes,
# as 64 hex digits: sha256((K ⊕ opad) ‖ sha256((K ⊕ ipad) ‖ message)), K zero-padded to 64
# bytes. The XOR is bash arithmetic and the padded keys reach xxd and sha256sum through
# pipes only, so the key is never an argument of any program.
hmac_sha256() {
  local key=$1 ipad='' opad='' i byte inner outer
  ((${#key} <= 128)) || return 1
  while ((${#key} < 128)); do key+=0; done
  for ((i = 0; i < 128; i += 2)); do
    byte=$((16#${key:i:2}))
    printf -v ipad '%s%02x' "$ipad" $((byte ^ 0x36))
    printf -v opad '%s%02x' "$opad" $((byte ^ 0x5c))
  done
  inner=$({ printf '%s' "$ipad" | xxd -r -p && cat; } | sha256sum) || return 1
  outer=$(printf '%s%s' "$opad" "${inner%% *}" | xxd -r -p | sha256sum) || return 1
  printf '%s' "${outer%% *}"
}

# recipient_hex AGE1…: the raw X25519 public key of an age recipient (bech32), as hex.
# The checksum is not checked: the result is only compared with a key derived from the
# unwrapped private key, and a typo can only make that comparison fail.
recipient_hex() {
  local charset=qpzry9x8gf2tvdw0s3jn54khce6mua7l data acc=0 bits=0 out='' i c v
  [[ ${1,,} =~ ^age1([qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58})$ ]] || return 1
  data=${BASH_REMATCH[1]:0:52}
  for ((i = 0; i < 52; i++)); do
    c=${data:i:1}
    v=${charset%%"$c"*}
    acc=$(((acc << 5) | ${#v}))
    bits=$((bits + 5))
    if ((bits >= 8)); then
      bits=$((bits - 8))
      printf -v out '%s%02x' "$out" $(((acc >> bits) & 255))
      acc=$((acc & ((1 << bits) - 1)))
    fi
  done
  ((acc == 0)) || return 1
  printf '%s' "$out"
}

# dimension_pem ID: the dimension key's private key (PKCS#8 PEM), unwrapped with the master
# key from its export entry. Call only as `pem=$(dimension_pem ID)`.
dimension_pem() {
  printf '%s' "${DIM_WRAPPED[$1]}" | base64 -d 2>/dev/null | age -d -i "$MASTER_KEY" 2>/dev/null
}

# check_dimension ID PEM: exits when the private key PEM (unwrapped from the export) is not
# an X25519 key or not the key its export entry's recipient names; returns otherwise.
check_dimension() {
  local id=$1 pem=$2 derived listed
  derived=$(openssl pkey -in <(printf '%s\n' "$pem") -pubout -outform DER 2>/dev/null | tail -c 32 | xxd -p -c 64) || derived=''
  [[ ${#derived} == 64 ]] ||
    die 6 "dimension key $id of the export unwraps to something that is not an X25519 private key: the export is damaged; use another export"
  listed=$(recipient_hex "${DIM_RECIPIENT[$id]}") || listed=''
  [[ $derived == "$listed" ]] ||
    die 6 "dimension key $id of the export unwraps to the private key of public key $derived, but the export lists ${DIM_RECIPIENT[$id]}: the export is damaged; use another export"
}

# shared_secret ID: Z = X25519(d, E) with dimension key ID and the cell's encapsulation
# (WORK/peer.der), as hex. Call only as `z=$(shared_secret ID) || exit`. Refuses an
# all-zero Z (OpenSSL 3 already refuses to derive one): a low-order E gives a secret anyone
# can compute.
shared_secret() {
  local id=$1 pem z
  pem=$(dimension_pem "$id") ||
    die 7 "the master key cannot open dimension key $id from the export: the master key file does not match this export, or the export is damaged"
  [[ $pem == '-----BEGIN PRIVATE KEY-----'* ]] ||
    die 2 "dimension key $id of the export is not an X25519 private key in PKCS#8 PEM form; $PROG reads $EXPORT_FORMAT exports: take one with \`lethe keys export\`"
  z=$(openssl pkeyutl -derive -inkey <(printf '%s\n' "$pem") -peerkey "$WORK/peer.der" -peerform DER 2>/dev/null | xxd -p -c 64) || z=''
  if [[ ! $z =~ ^[0-9a-f]{64}$ || $z =~ ^0+$ ]]; then
    # The private key, or the point? A sound key that matches its recipient leaves the point.
    check_dimension "$id" "$pem"
    die 6 "refusing cell $CELL: encapsulation $ENC_ID has ephemeral key $EPHEMERAL, a low-order or malformed X25519 point, with which no secret can be derived (anyone could compute it); nothing was decrypted. The manifest is signed, so lethe wrote this: report it, and read the cell from another snapshot"
  fi
  printf '%s' "$z"
}

# le64 N: N as 8 bytes little-endian, in hex.
le64() {
  local be out='' i
  printf -v be '%016x' "$1"
  for ((i = 14; i >= 0; i -= 2)); do out+=${be:i:2}; done
  printf '%s' "$out"
}

# tag_verifies KEY_HEX CELL_FILE: whether CELL_FILE (ciphertext ‖ tag) authenticates under
# KEY_HEX as ChaCha20-Poly1305 with a zero nonce and no associated data (RFC 8439 2.8):
# the Poly1305 one-time key is the first 32 bytes of ChaCha20 block 0, and the MAC covers
# ciphertext ‖ zero padding to 16 ‖ le64(0) ‖ le64(ciphertext length).
tag_verifies() {
  local key=$1 file=$2 otk clen pad tag expected
  clen=$(($(stat -L -c '%s' -- "$file") - TAG_BYTES))
  otk=$(head -c 32 /dev/zero | openssl enc -chacha20 -K "$key" -iv "$IV_BLOCK0" | xxd -p -c 64) || return 1
  pad=$(((16 - clen % 16) % 16))
  tag=$({
    head -c "$clen" -- "$file"
    head -c "$pad" /dev/zero
    printf '%s%s' "$(le64 0)" "$(le64 "$clen")" | xxd -r -p
  } | openssl mac -macopt "hexkey:$otk" POLY1305) || return 1
  expected=$(tail -c "$TAG_BYTES" -- "$file" | xxd -p)
  [[ ${tag,,} == "$expected" ]]
}

# --- decrypt

decrypt_cell() {
  need_file 'keys export' "$KEYS_EXPORT"
  need_file 'master key' "$MASTER_KEY"
  [[ -d $OBJECTS ]] || die 4 "objects directory $OBJECTS does not exist"
  if [[ -n $OUT ]]; then
    [[ ! -e $OUT ]] || die 2 "--out $OUT already exists; choose a new file (outputs are never overwritten)"
    [[ -d $(dirname -- "$OUT") ]] || die 4 "the directory of --out $OUT does not exist; create it first"
  fi
  local mode
  mode=$(stat -L -c '%a' -- "$MASTER_KEY")
  [[ $mode == 600 || $mode == 400 ]] || warn "master key $MASTER_KEY has mode $mode; it should be 600 (chmod 600 $MASTER_KEY)"

  # The cell (in v4, from its segment, checked first), and the encapsulation its key derives from.
  local table key enc pack offset length sha rows fields line
  line=$(cell_entry "$CELL" '[.table, .key, .enc, .pack, .offset, .length, .sha256, .rows] + .dims | @tsv') || exit
  [[ -n $line ]] || die 4 "cell $CELL is not in manifest $MANIFEST; list its cells with: $PROG --list --manifest $MANIFEST --objects $OBJECTS"
  IFS=$'\t' read -r -a fields <<<"$line"
  ((${#fields[@]} >= 9)) || die 6 "cell $CELL in manifest $MANIFEST names no dimension keys"
  table=${fields[0]} key=${fields[1]} enc=${fields[2]} pack=${fields[3]} offset=${fields[4]}
  length=${fields[5]} sha=${fields[6]} rows=${fields[7]}
  DIMS=("${fields[@]:8}")
  ENC_ID=$enc
  local kem
  IFS=$'\t' read -r kem EPHEMERAL < <(manifest_entry "$enc" tenant encapsulations '[.kem, .ephemeral] | @tsv') ||
    die 6 "cell $CELL derives its key from encapsulation $enc, which manifest $MANIFEST does not list"
  # keys.postQuantum: the key also needs ML-KEM-768 decapsulation, which no stock tool here has.
  [[ $kem != x25519-mlkem768 ]] ||
    die 2 "cell $CELL's key derives from encapsulation $enc of kem \"x25519-mlkem768\" (written with keys.postQuantum): it needs ML-KEM-768 decapsulation, which the stock tools $PROG uses (openssl 3.0, age) do not have. Restore it with lethe: lethe vault restore (from a vault backup, if the vault is lost), then lethe restore; or decapsulate with a tool that has ML-KEM-768 as docs/format.md (Hybrid encapsulation) describes. Cells of kem \"x25519\" (written before the option) $PROG still reads"
  [[ $kem == x25519 ]] ||
    die 2 "cell $CELL's key derives from encapsulation $enc of kem ${kem@Q}; $PROG opens only kem \"x25519\" (docs/format.md). Use lethe, or the runbooks/dr-decrypt.sh of the lethe version that wrote this snapshot"
  [[ $EPHEMERAL =~ ^[0-9a-f]{64}$ ]] ||
    die 6 "encapsulation $enc in manifest $MANIFEST has ephemeral key ${EPHEMERAL@Q}, not 32 bytes of hex"

  # The keys export and the master key.
  local export_format export_master master exported_at completed_at first
  # The header is the export's first line, `{"format":...,"dimensionKeys":[`.
  IFS= read -r first <"$KEYS_EXPORT" || true
  IFS=$'\t' read -r export_format export_master exported_at < <(
    jq -r '[.format, .masterRecipient, .exportedAt] | @tsv' <<<"$first]}" 2>/dev/null ||
      jq -r '[.format, .masterRecipient, .exportedAt] | @tsv' "$KEYS_EXPORT"
  ) || die 2 "$KEYS_EXPORT is not JSON: is it a lethe keys export?"
  if [[ $export_format == 'lethe.keys-export.v1' ]]; then
    die 2 "$KEYS_EXPORT is a lethe.keys-export.v1 export, from a lethe before the $MANIFEST_V3 cell format (its dimension keys are age identities); this snapshot needs a keys export of format $EXPORT_FORMAT, taken with \`lethe keys export\` by the lethe that wrote it"
  fi
  [[ $export_format == "$EXPORT_FORMAT" ]] || die 2 "$KEYS_EXPORT is not a lethe keys export (format ${export_format@Q}, expected $EXPORT_FORMAT)"
  master=$(age-keygen -y "$MASTER_KEY" 2>/dev/null) || die 7 "$MASTER_KEY is not an age identity file"
  [[ $master == "$export_master" ]] ||
    die 7 "the master key $MASTER_KEY (recipient $master) is not the one this export is wrapped to ($export_master); use the escrowed key of the vault that made the export"

  # Whether every dimension key the cell needs still exists.
  local id entry absent=()
  for id in "${DIMS[@]}"; do
    entry=$(export_entry "$id" '[.recipient, .wrapped] | @tsv')
    if [[ -z $entry ]]; then
      absent+=("$id")
      continue
    fi
    DIM_RECIPIENT[$id]=${entry%%$'\t'*}
    DIM_WRAPPED[$id]=${entry#*$'\t'}
  done
  if ((${#absent[@]} > 0)); then
    completed_at=$(header_value totals | jq -r '.completedAt')
    local why="a key absent from the export has been destroyed: the cell is crypto-shredded and unreadable by design (erasure, retention or shredded case); the destruction certificate and audit log name it. (Data under a legal hold whose period key was destroyed is kept under the case's key, which is not exported: lethe with its vault reads it, this script cannot)"
    [[ $exported_at > "$completed_at" ]] ||
      why+=". NOTE: the export ($exported_at) is older than this snapshot ($completed_at): the key may simply be newer than the export; use a newer export"
    die 5 "cell $CELL cannot be decrypted: its key $key needs dimension key(s) ${absent[*]}, which the keys export does not hold; $why"
  fi

  # The ciphertext: cut out of the pack and checked BEFORE anything is decrypted.
  local pack_path size cell=$WORK/cell.bin actual
  pack_path=$(object_path "$pack")
  [[ -f $pack_path ]] || die 4 "pack $pack of cell $CELL is missing under $OBJECTS; copy it from the bucket (aws s3 cp s3://BUCKET/$pack $pack_path)"
  size=$(stat -L -c '%s' -- "$pack_path")
  ((offset + length <= size)) || die 6 "pack $pack is $size bytes, but cell $CELL lies at bytes $offset..$((offset + length)): the pack copy is truncated; fetch it again"
  ((length >= TAG_BYTES)) || die 6 "cell $CELL is $length bytes in the manifest, shorter than its tag"
  dd if="$pack_path" of="$cell" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count="$length" status=none
  actual=$(sha256_of <"$cell")
  [[ $actual == "$sha" ]] ||
    die 6 "sha256 mismatch: cell $CELL (bytes $offset..$((offset + length)) of $pack) hashes to $actual, the manifest says $sha; nothing was decrypted. Fetch the pack again; if it persists the stored object is damaged"

  # The cell key, from secrets held in variables only (see the header).
  printf '%s%s' "$X25519_SPKI_PREFIX" "$EPHEMERAL" | xxd -r -p >"$WORK/peer.der"
  local secrets='' z prk cell_key salt
  for id in "${DIMS[@]}"; do
    z=$(shared_secret "$id") || exit
    secrets+=$z
  done
  salt=$(printf '%s' "$CELL_KEY_SALT" | xxd -p -c 64)
  prk=$({ printf '%s%s' "$secrets" "$EPHEMERAL" | xxd -r -p && printf '%s\n' "${DIMS[@]}"; } | hmac_sha256 "$salt") ||
    die 1 "could not compute the tuple key of cell $CELL"
  unset secrets z
  cell_key=$(printf '%s%s\001' "$CELL_KEY_INFO" "$CELL" | hmac_sha256 "$prk") ||
    die 1 "could not compute the key of cell $CELL"
  unset prk

  # The tag, before any plaintext exists: a wrong key never yields output.
  if ! tag_verifies "$cell_key" "$cell"; then
    for id in "${DIMS[@]}"; do check_dimension "$id" "$(dimension_pem "$id")"; done
    die 7 "cell $CELL does not authenticate under the key derived from the export (its ciphertext matches the manifest, its Poly1305 tag does not); nothing was decrypted. The export holds keys for ${DIMS[*]} that are not the ones the backup used: an export of another vault, or an altered export; use the export taken with this snapshot's vault"
  fi

  # Decrypt: the ciphertext without its tag, ChaCha20 from block 1. With --out, into a
  # private partial file renamed only when everything checked out.
  local clen=$((length - TAG_BYTES))
  if [[ -z $OUT ]]; then
    local status=0
    head -c "$clen" -- "$cell" | openssl enc -d -chacha20 -K "$cell_key" -iv "$IV_BLOCK1" 2>/dev/null || status=$?
    # 141 = SIGPIPE: whoever reads stdout stopped early (`| head`); that is not a failure here.
    ((status == 0 || status == 141)) || die 1 "openssl could not decrypt cell $CELL (exit $status)"
    return 0
  fi
  PARTIAL=$(mktemp "$OUT.partial.XXXXXX")
  head -c "$clen" -- "$cell" | openssl enc -d -chacha20 -K "$cell_key" -iv "$IV_BLOCK1" >"$PARTIAL" 2>/dev/null ||
    die 1 "openssl could not decrypt cell $CELL"
  local lines
  if [[ $table == *.blob ]]; then
    # A blob cell (a file outside the database): its header and the file's bytes; the length is checked.
    lines=$(wc -c <"$PARTIAL")
    ((lines == clen)) || die 6 "blob cell $CELL decrypted to $lines bytes, the manifest says $clen"
  else
    lines=$(wc -l <"$PARTIAL")
    ((lines == rows)) || die 6 "cell $CELL decrypted to $lines rows, the manifest says $rows"
  fi
  mv -n -- "$PARTIAL" "$OUT" || true
  [[ ! -e $PARTIAL ]] || die 2 "--out $OUT appeared while decrypting; left it alone"
  PARTIAL=''
  printf '%s: cell %s: %s rows of table %s written to %s\n' "$PROG" "$CELL" "$rows" "$table" "$OUT" >&2
}

# --- arguments

MASTER_KEY='' MANIFEST='' OBJECTS='' KEYS_EXPORT='' CELL='' OUT='' TABLE='' TENANT=''
MODE=decrypt SCHEMA_PART='' NOT_LATEST=0 WORK='' PLAIN='' PARTIAL=''
# The authenticated manifest's format: lethe.manifest.v4 (a tree of segments) or v3.
FORMAT=''
SIGNING_KEYS=()
# The cell's dimension key ids (key-derivation order), its encapsulation, and the export's
# entries for its dimension keys: wrapped to the master key, not secrets.
DIMS=()
ENC_ID='' EPHEMERAL=''
declare -A DIM_RECIPIENT=() DIM_WRAPPED=()
while (($# > 0)); do
  case $1 in
    --master-key | --manifest | --objects | --keys-export | --cell | --out | --table | --tenant | --schema-sql | --signing-key)
      (($# >= 2)) || die 2 "$1 needs a value (see --help)"
      case $1 in
        --master-key) MASTER_KEY=$2 ;;
        --manifest) MANIFEST=$2 ;;
        --objects) OBJECTS=${2%/} ;;
        --keys-export) KEYS_EXPORT=$2 ;;
        --cell) CELL=$2 ;;
        --out) OUT=$2 ;;
        --table) TABLE=$2 ;;
        --tenant) TENANT=$2 ;;
        --schema-sql) MODE=schema SCHEMA_PART=$2 ;;
        --signing-key) SIGNING_KEYS+=("$2") ;;
      esac
      shift 2
      ;;
    --list) MODE=list; shift ;;
    --not-latest) NOT_LATEST=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die 2 "unknown argument ${1@Q} (see --help)" ;;
  esac
done

need_tools jq openssl gzip xxd awk base64 sha256sum head tail grep mktemp basename dirname cat rm stat
need_openssl3
[[ -n $MANIFEST ]] || die 2 '--manifest FILE is required'
need_file 'manifest' "$MANIFEST"
if [[ $MODE == decrypt ]]; then
  for opt in MASTER_KEY:--master-key OBJECTS:--objects KEYS_EXPORT:--keys-export CELL:--cell; do
    var=${opt%%:*}
    [[ -n ${!var} ]] || die 2 "${opt#*:} is required to decrypt a cell (or use --list / --schema-sql)"
  done
  need_tools age age-keygen dd wc mv
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dr-decrypt.XXXXXX")
PLAIN=$WORK/manifest.json
cleanup() {
  rm -rf -- "$WORK"
  [[ -z $PARTIAL ]] || rm -f -- "$PARTIAL"
}
trap cleanup EXIT
authenticate_manifest
case $MODE in
  list) list_cells ;;
  schema)
    [[ $SCHEMA_PART == pre || $SCHEMA_PART == post ]] || die 2 "--schema-sql takes pre or post, not ${SCHEMA_PART@Q}"
    schema_sql "$SCHEMA_PART"
    ;;
  decrypt) decrypt_cell ;;
esac
