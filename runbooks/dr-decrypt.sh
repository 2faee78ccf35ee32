#!/usr/bin/env bash
# dr-decrypt.sh: read a lethe snapshot without lethe (runbooks/disaster-recovery.md).
#
# Uses only the stock age CLI (age, age-keygen), openssl (Ed25519 signatures), jq, grep and
# GNU coreutils (base64, dd, sha256sum, head, tail, stat, mktemp): no lethe code, no Node.js.
#
# Nothing in a manifest is used before it is authenticated: its Ed25519 signature must
# verify under a public key you give with --signing-key (the backup signing key's public
# half, escrowed with the master key; never a key found in the bucket or a keys export),
# it must be the snapshot its file name says, and no other signed manifest beside it may
# follow it (so an old snapshot is never taken for the newest) unless --not-latest says so.
# Decrypts one cell of a snapshot to PostgreSQL COPY text, lists a manifest's cells, or
# prints the SQL that recreates the snapshot's tables.
#
# Secrets never touch disk or argv: every identity (dimension keys, cell key) exists only
# in pipes. Each is unwrapped inside a process substitution, `age -i <(...)`, so age reads
# it from /dev/fd/N. A temp file, even on tmpfs, can be swapped out and outlives a kill -9;
# a pipe holds the secret only while both ends are alive. The master key is read from the
# escrow file given, where it already is.
#
# Exit codes: 0 ok, 1 unexpected failure, 2 usage, 3 a required tool is missing,
# 4 not found (cell, key, file), 5 crypto-shredded (a dimension key is not in the export),
# 6 integrity (sha256 mismatch, wrong recipient), 7 a key does not open (wrong master key).
set -euo pipefail
umask 077

readonly PROG=${0##*/}
readonly MANIFEST_FORMATS=('lethe.manifest.v1' 'lethe.manifest.v2')
readonly EXPORT_FORMAT='lethe.keys-export.v1'

usage() {
  cat <<EOF
usage:
  $PROG --signing-key PUB --master-key FILE --manifest FILE --objects DIR --keys-export FILE --cell CELL_ID [--out FILE]
  $PROG --signing-key PUB --list --manifest FILE [--table NAME] [--tenant ID]
  $PROG --signing-key PUB --schema-sql pre|post --manifest FILE

  --cell ID        decrypt one cell (ids from --list) to COPY text, on stdout or into
                   --out FILE (written only when everything checked out; never overwritten)
  --objects DIR    local copy of the bucket (or its prefix): DIR/packs/..., DIR/keys/...
  --keys-export    output of \`lethe keys export\` (dimension keys wrapped to the master key)
  --master-key     the escrowed master age identity file
  --list           print the manifest's cells: id<TAB>table<TAB>rows, one per line
  --schema-sql     print the SQL that creates the snapshot's tables before loading (pre),
                   or adds keys, indexes and sequence positions after loading (post)
  --signing-key    the backup signing key's public half (PEM, backup-signing.key.pub from
                   \`lethe init\`), from your escrow; repeat it for keys retired by a rotation.
                   Required: the manifest's signature is checked before anything in it is used
  --not-latest     read a snapshot although a newer signed one follows it in the same
                   directory (a point-in-time restore on purpose)

exit codes: 0 ok, 2 usage, 3 missing tool, 4 not found, 5 crypto-shredded,
            6 integrity (signature, sha256 or recipient mismatch, not the newest snapshot),
            7 key does not open, 1 other
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
    die 3 "required tool(s) not found on PATH: ${missing[*]}; install them (Debian/Ubuntu: apt-get install age jq openssl coreutils)"
  fi
}

need_file() {
  [[ -f $2 && -r $2 ]] || die 4 "$1 $2 does not exist or is not readable"
}

# A bucket key from a manifest, as a path under --objects. Refuses anything that could
# leave the directory: the manifest is only trusted after its checks.
object_path() {
  local key=$1
  case "/$key/" in
    *'/../'* | *'/./'* | *'//'*) die 6 "object key ${key@Q} in the manifest is not a plain relative path" ;;
  esac
  [[ $key != /* ]] || die 6 "object key ${key@Q} in the manifest is absolute"
  printf '%s/%s' "$OBJECTS" "$key"
}

sha256_of() { sha256sum | { read -r sum _ && printf '%s' "$sum"; }; }

# find_entry FILE ID KIND FILTER: prints FILTER (a jq filter, raw output) applied to the
# entry whose .id is ID, or nothing. KIND is `array:<jq path>` for one JSON document
# (manifest, export) or `ndjson` (key files). lethe writes one entry per line,
# `{"id":"...",...}` (ids are percent-encoded: no quotes or backslashes), so a fixed-string
# grep finds it in a multi-GB file without parsing it all, and jq checks that line. If the
# file was reformatted, a full jq parse decides.
find_entry() {
  local file=$1 id=$2 kind=$3 filter=$4 line out
  line=$(grep -F -m 1 -e "{\"id\":\"$id\"," -- "$file" || true)
  # (Not ${line%,}: bash pattern removal is quadratic on a multi-MB line.)
  [[ $line != *, ]] || line=${line:0:${#line}-1}
  if [[ -n $line ]] &&
    out=$(jq -r --arg id "$id" "select(type == \"object\" and .id == \$id) | $filter" <<<"$line" 2>/dev/null) &&
    [[ -n $out ]]; then
    printf '%s\n' "$out"
    return 0
  fi
  if [[ $kind == ndjson ]]; then
    jq -rn --arg id "$id" "first(inputs | select(.id == \$id)) // empty | $filter" "$file"
  else
    jq -r --arg id "$id" "first(${kind#array:}[] | select(.id == \$id)) // empty | $filter" "$file"
  fi
}

# header_value NAME [FILE]: the JSON value of a manifest member written before the cells
# (snapshot, schema, keyFiles). lethe writes each on its own line, `"NAME":<json>,`, so it
# is read without parsing a million-cell manifest. (A reformatted manifest never gets this
# far: its signature covers the bytes as lethe wrote them.)
header_value() {
  local line
  line=$(grep -m 1 -e "^\"$1\":" -- "${2:-$MANIFEST}" || true)
  line=${line:${#1}+3}
  [[ $line != *, ]] || line=${line:0:${#line}-1}
  jq -ce '.' <<<"$line" 2>/dev/null || die 6 "${2:-$MANIFEST} has no readable \"$1\" line"
}

# --- secrets: these functions write identities to stdout; call them only inside pipes or
# --- process substitutions, never capture their output in a variable or file.

# dimension_identity ID: the dimension key's age identity, unwrapped with the master key
# from its export entry (looked up by decrypt_cell into DIM_WRAPPED).
dimension_identity() {
  [[ -n ${DIM_WRAPPED[$1]:-} ]] || return 1
  printf '%s' "${DIM_WRAPPED[$1]}" | base64 -d | age -d -i "$MASTER_KEY"
}

# peel ID...: stdin is an AND-wrapped identity, args its dimension key ids innermost first.
# Peels the outermost layer (the last id: the tenant) and recurses inward.
peel() {
  if (($# == 0)); then
    cat
    return
  fi
  local outermost=${!#}
  age -d -i <(dimension_identity "$outermost") | peel "${@:1:$#-1}"
}

# cell_identity: the cell key's identity, AND-unwrapped from the key file entry.
cell_identity() {
  printf '%s' "$KEY_WRAPPED" | base64 -d | peel "${DIMENSIONS[@]}"
}

# --- modes

list_cells() {
  jq -r --arg table "$TABLE" --arg tenant "$TENANT" '
    .cells[]
    | select(($table == "" or .table == $table) and ($tenant == "" or .tenant == $tenant))
    | [.id, .table, .rows] | @tsv' "$MANIFEST"
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

# signature_problem FILE: prints nothing and returns 0 when FILE is a lethe manifest whose
# body hashes to the sha256 its signature covers and whose Ed25519 signature verifies under
# one of the --signing-key files; otherwise prints why and returns 1. The signed bytes are
# `<format>\n<sha256 of every byte before the last line>\n`.
signature_problem() {
  local file=$1 first format last signed value actual key
  IFS= read -r first <"$file" || true
  format=''
  for key in "${MANIFEST_FORMATS[@]}"; do [[ $first == "{\"format\":\"$key\"," ]] && format=$key; done
  [[ -n $format ]] || { echo "it is not a lethe manifest (first line: ${first:0:80})"; return 1; }
  last=$(tail -n 1 -- "$file")
  [[ $last =~ ^\"signature\":\{.*\"sha256\":\"([0-9a-f]{64})\" ]] ||
    { echo 'it has no signature line: it is truncated or not a complete manifest'; return 1; }
  signed=${BASH_REMATCH[1]}
  [[ $last =~ \"value\":\"([A-Za-z0-9+/=]+)\" ]] || { echo 'its signature line is malformed'; return 1; }
  value=${BASH_REMATCH[1]}
  actual=$(head -n -1 -- "$file" | sha256_of)
  [[ $actual == "$signed" ]] ||
    { echo "its body hashes to $actual but its signature covers $signed: it was edited after signing, or is corrupted"; return 1; }
  printf '%s\n%s\n' "$format" "$actual" >"$WORK/signed-message"
  printf '%s' "$value" | base64 -d >"$WORK/signature" 2>/dev/null || { echo 'its signature is not base64'; return 1; }
  for key in "${SIGNING_KEYS[@]}"; do
    openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$WORK/signed-message" -sigfile "$WORK/signature" >/dev/null 2>&1 && return 0
  done
  echo "its signature does not verify under the signing key(s) given (${SIGNING_KEYS[*]})"
  return 1
}

# authenticate_manifest: the checks every mode runs before it uses anything in the manifest.
# 1. The Ed25519 signature, under a key from your escrow (never one from the bucket).
# 2. The snapshot id inside equals the file name: a validly signed manifest of another
#    snapshot copied over this name is refused.
# 3. Freshness: no other validly signed manifest in the same directory names this one as its
#    previous snapshot (fetch the whole snapshots/ prefix: it is small). An attacker who
#    cannot sign cannot forge a newer one; one who deletes newer manifests is stopped by
#    object lock, or by comparing with your own record of the latest snapshot id.
# 4. The link to the previous snapshot: when its manifest is beside this one, its sha256
#    must be the one this manifest names.
authenticate_manifest() {
  ((${#SIGNING_KEYS[@]} > 0)) ||
    die 2 "--signing-key FILE is required: the backup signing key's public half from your escrow (backup-signing.key.pub, written by lethe init). The manifest's signature is checked before anything in it is used; a key found in the bucket or in a keys export proves nothing"
  local key why id base dir other previous newer=() prev_id prev_sha actual
  for key in "${SIGNING_KEYS[@]}"; do
    need_file 'signing key' "$key"
    grep -q -- '-----BEGIN PUBLIC KEY-----' "$key" ||
      die 2 "--signing-key $key is not a PEM public key; give the .pub file (never the private key)"
  done
  why=$(signature_problem "$MANIFEST") ||
    die 6 "manifest $MANIFEST cannot be trusted, so nothing in it was used: $why. Fetch it again from the bucket; if it persists, the stored manifest was altered: use another snapshot"
  id=$(header_value snapshot | jq -r '.id')
  base=$(basename -- "$MANIFEST" .json)
  [[ $id == "$base" ]] ||
    die 6 "manifest $MANIFEST is signed, but names snapshot $id, not $base: a manifest stored under another snapshot's name"
  dir=$(dirname -- "$MANIFEST")
  for other in "$dir"/*.json; do
    [[ -f $other && $other != "$MANIFEST" ]] || continue
    previous=$(grep -m 1 -e '^"snapshot":' -- "$other" 2>/dev/null || true)
    [[ $previous == *"\"previous\":{\"id\":\"$id\""* ]] || continue
    if why=$(signature_problem "$other"); then
      newer+=("$(basename -- "$other" .json)")
    else
      warn "$other claims to follow snapshot $id but cannot be trusted ($why); ignored"
    fi
  done
  if ((${#newer[@]} > 0)); then
    ((NOT_LATEST == 1)) ||
      die 6 "snapshot $id is not the newest: ${newer[*]} follows it, signed. Use the newest snapshot, or pass --not-latest to read this older one on purpose"
    warn "snapshot $id is not the newest (${newer[*]} follows it); reading it as asked (--not-latest)"
  fi
  IFS=$'\t' read -r prev_id prev_sha < <(header_value snapshot | jq -r '[.previous.id // "", .previous.sha256 // ""] | @tsv')
  if [[ -n $prev_id && -f $dir/$prev_id.json ]]; then
    actual=$(sha256_of <"$dir/$prev_id.json")
    [[ $actual == "$prev_sha" ]] ||
      die 6 "the previous snapshot's manifest $dir/$prev_id.json hashes to $actual, but $id names $prev_sha: one of the two was altered"
  fi
}

# Finds the cell's key in the key files the manifest lists, after checking that file's
# sha256 against the manifest. Sets KEY_RECIPIENT, KEY_WRAPPED and DIMENSIONS.
find_cell_key() {
  local key=$1 file sha path entry missing=() key_files fields
  key_files=$(header_value keyFiles)
  [[ $(jq 'length' <<<"$key_files") -gt 0 ]] || die 4 "the manifest lists no key files, so the key of cell $CELL cannot be found"
  while IFS=$'\t' read -r file sha; do
    path=$(object_path "$file")
    if [[ ! -f $path ]]; then
      missing+=("$file")
      continue
    fi
    entry=$(find_entry "$path" "$key" ndjson '[.recipient, .wrapped] + .dimensions | @tsv')
    [[ -n $entry ]] || continue
    local actual
    actual=$(sha256_of <"$path")
    [[ $actual == "$sha" ]] ||
      die 6 "sha256 mismatch: key file $file hashes to $actual, the manifest says $sha; fetch it again from the bucket"
    IFS=$'\t' read -r -a fields <<<"$entry"
    KEY_RECIPIENT=${fields[0]}
    KEY_WRAPPED=${fields[1]}
    DIMENSIONS=("${fields[@]:2}")
    ((${#DIMENSIONS[@]} > 0)) || die 6 "cell key $key has no dimension keys in key file $file"
    return 0
  done < <(jq -r '.[] | [.key, .sha256] | @tsv' <<<"$key_files")
  if ((${#missing[@]} > 0)); then
    die 4 "cell key $key is in none of the key files present, and these key files the manifest lists are missing under $OBJECTS: ${missing[*]}; copy keys/ from the bucket (aws s3 sync s3://BUCKET/keys/ $OBJECTS/keys/)"
  fi
  die 4 "cell key $key is in none of the key files the manifest lists; the bucket copy is incomplete or the manifest is not lethe's"
}

# diagnose_unwrap AGE_STDERR_FILE: explains why the cell could not be decrypted, layer by
# layer, and exits. (age's messages hold no key material.)
diagnose_unwrap() {
  local id recipient expected age_said
  age_said=$(head -c 500 -- "$1" | tr '\n' ' ')
  for id in "${DIMENSIONS[@]}"; do
    expected=${DIM_RECIPIENT[$id]}
    recipient=$(dimension_identity "$id" 2>/dev/null | age-keygen -y 2>/dev/null) ||
      die 7 "the master key cannot open dimension key $id from the export: the master key file does not match this export, or the export is damaged"
    [[ $recipient == "$expected" ]] ||
      die 6 "dimension key $id unwraps to a key for $recipient but the export lists $expected: the export is damaged"
  done
  expected=$KEY_RECIPIENT
  recipient=$(cell_identity 2>/dev/null | age-keygen -y 2>/dev/null) ||
    die 7 "the dimension keys open, but not the AND-wrapped key of cell $CELL (${DIMENSIONS[*]}): its key file entry is damaged, or the cell key was re-wrapped after this key file was written (e.g. under a legal-hold case key), which only lethe can read"
  [[ $recipient == "$expected" ]] ||
    die 6 "cell key of $CELL unwraps to a key for $recipient, but its key file says $expected: the key file entry is damaged"
  die 7 "the cell key of $CELL opens, but age failed on the cell (whose sha256 matched the manifest): $age_said"
}

decrypt_cell() {
  need_file 'manifest' "$MANIFEST"
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

  # The cell.
  local table key pack offset length sha rows
  IFS=$'\t' read -r table key pack offset length sha rows < <(
    find_entry "$MANIFEST" "$CELL" 'array:.cells' '[.table, .key, .pack, .offset, .length, .sha256, .rows] | @tsv'
  ) || die 4 "cell $CELL is not in manifest $MANIFEST; list its cells with: $PROG --list --manifest $MANIFEST"

  # The keys export and the master key.
  local export_format export_master master exported_at completed_at first
  # The header is the export's first line, `{"format":...,"dimensionKeys":[`.
  IFS= read -r first <"$KEYS_EXPORT" || true
  IFS=$'\t' read -r export_format export_master exported_at < <(
    jq -r '[.format, .masterRecipient, .exportedAt] | @tsv' <<<"$first]}" 2>/dev/null ||
      jq -r '[.format, .masterRecipient, .exportedAt] | @tsv' "$KEYS_EXPORT"
  ) || die 2 "$KEYS_EXPORT is not JSON: is it a lethe keys export?"
  [[ $export_format == "$EXPORT_FORMAT" ]] || die 2 "$KEYS_EXPORT is not a lethe keys export (format ${export_format@Q}, expected $EXPORT_FORMAT)"
  master=$(age-keygen -y "$MASTER_KEY" 2>/dev/null) || die 7 "$MASTER_KEY is not an age identity file"
  [[ $master == "$export_master" ]] ||
    die 7 "the master key $MASTER_KEY (recipient $master) is not the one this export is wrapped to ($export_master); use the escrowed key of the vault that made the export"

  # The cell key, and whether every dimension key it needs still exists.
  find_cell_key "$key"
  local id entry absent=()
  for id in "${DIMENSIONS[@]}"; do
    entry=$(find_entry "$KEYS_EXPORT" "$id" 'array:.dimensionKeys' '[.recipient, .wrapped] | @tsv')
    if [[ -z $entry ]]; then
      absent+=("$id")
      continue
    fi
    DIM_RECIPIENT[$id]=${entry%%$'\t'*}
    DIM_WRAPPED[$id]=${entry#*$'\t'}
  done
  if ((${#absent[@]} > 0)); then
    completed_at=$(header_value snapshot | jq -r '.completedAt')
    local why="a key absent from the export has been destroyed: the cell is crypto-shredded and unreadable by design (erasure, retention or shredded case); the destruction certificate and audit log name it"
    [[ $exported_at > "$completed_at" ]] ||
      why+=". NOTE: the export ($exported_at) is older than this snapshot ($completed_at): the key may simply be newer than the export; use a newer export"
    die 5 "cell $CELL cannot be decrypted: its key $key needs dimension key(s) ${absent[*]}, which the keys export does not hold; $why"
  fi

  # The ciphertext: cut out of the pack and checked BEFORE anything is decrypted.
  local pack_path size work=$WORK actual
  pack_path=$(object_path "$pack")
  [[ -f $pack_path ]] || die 4 "pack $pack of cell $CELL is missing under $OBJECTS; copy it from the bucket (aws s3 cp s3://BUCKET/$pack $pack_path)"
  size=$(stat -L -c '%s' -- "$pack_path")
  ((offset + length <= size)) || die 6 "pack $pack is $size bytes, but cell $CELL lies at bytes $offset..$((offset + length)): the pack copy is truncated; fetch it again"
  dd if="$pack_path" of="$work/cell.age" bs=1M iflag=skip_bytes,count_bytes skip="$offset" count="$length" status=none
  actual=$(sha256_of <"$work/cell.age")
  [[ $actual == "$sha" ]] ||
    die 6 "sha256 mismatch: cell $CELL (bytes $offset..$((offset + length)) of $pack) hashes to $actual, the manifest says $sha; nothing was decrypted. Fetch the pack again; if it persists the stored object is damaged"

  # Decrypt, with the cell key AND-unwrapped in pipes only. age authenticates: a wrong key
  # yields no plaintext at all, and then diagnose_unwrap says which layer failed. With
  # --out, into a private partial file renamed only when everything checked out.
  if [[ -z $OUT ]]; then
    local status=0
    age -d -i <(cell_identity 2>/dev/null) "$work/cell.age" 2>"$work/age.err" || status=$?
    # 141 = SIGPIPE: whoever reads stdout stopped early (`| head`); that is not a failure here.
    ((status == 0 || status == 141)) || diagnose_unwrap "$work/age.err"
    return "$status"
  else
    local partial
    partial=$(mktemp "$OUT.partial.XXXXXX")
    # shellcheck disable=SC2064 # expand now: both are fixed for this run
    trap "rm -rf -- '$WORK' '$partial'" EXIT
    age -d -i <(cell_identity 2>/dev/null) "$work/cell.age" >"$partial" 2>"$work/age.err" || diagnose_unwrap "$work/age.err"
    local lines
    lines=$(wc -l <"$partial")
    ((lines == rows)) || die 6 "cell $CELL decrypted to $lines rows, the manifest says $rows"
    mv -n -- "$partial" "$OUT" || true
    [[ ! -e $partial ]] || die 2 "--out $OUT appeared while decrypting; left it alone"
    printf '%s: cell %s: %s rows of table %s written to %s\n' "$PROG" "$CELL" "$rows" "$table" "$OUT" >&2
  fi
}

# --- arguments

MASTER_KEY='' MANIFEST='' OBJECTS='' KEYS_EXPORT='' CELL='' OUT='' TABLE='' TENANT=''
MODE=decrypt SCHEMA_PART='' NOT_LATEST=0 WORK=''
SIGNING_KEYS=()
# The cell key (from its key file) and its dimension keys (from the export). These are
# wrapped, not secrets; identities are unwrapped only inside pipes.
KEY_RECIPIENT='' KEY_WRAPPED=''
DIMENSIONS=()
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

need_tools jq openssl base64 sha256sum head tail grep mktemp
[[ -n $MANIFEST ]] || die 2 '--manifest FILE is required'
need_file 'manifest' "$MANIFEST"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/dr-decrypt.XXXXXX")
# shellcheck disable=SC2064 # expand now: fixed for this run
trap "rm -rf -- '$WORK'" EXIT
authenticate_manifest
case $MODE in
  list) list_cells ;;
  schema)
    [[ $SCHEMA_PART == pre || $SCHEMA_PART == post ]] || die 2 "--schema-sql takes pre or post, not ${SCHEMA_PART@Q}"
    schema_sql "$SCHEMA_PART"
    ;;
  decrypt)
    for opt in MASTER_KEY:--master-key OBJECTS:--objects KEYS_EXPORT:--keys-export CELL:--cell; do
      var=${opt%%:*}
      [[ -n ${!var} ]] || die 2 "${opt#*:} is required to decrypt a cell (or use --list / --schema-sql)"
    done
    need_tools age age-keygen base64 dd sha256sum grep head tail wc stat mktemp dirname
    decrypt_cell
    ;;
esac
