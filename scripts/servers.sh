# shellcheck shell=bash
# Helper library for scripts/test: makes the servers the test suite needs
# reachable on loopback, and tracks the private ones it starts.
#
# Sourced, not executed. Expects ROOT (repository root) to be set.
#
# Every private server has, in $RUN_DIR:
#   NAME.pid   pid of the server process
#   NAME.port  its TCP port on 127.0.0.1
#   NAME.dir   (optional) a data dir outside $RUN_DIR to delete on stop
# Servers that were already listening on their standard port are reused
# and never stopped by this library.

RUN_DIR="${ROOT}/target/test-servers"
ENV_FILE="${ROOT}/target/test-servers.env"

# Names of private servers started by *this* invocation (stopped on exit).
STARTED_HERE=()

# Resulting connection details, filled by ensure_* functions.
PG_PORT="" MYSQL_PORT="" REDIS_PORT="" MEMCACHED_PORT="" CLUSTER_PORTS=()

log()  { printf '    %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die()  { printf '\nERROR: %s\n\n' "$*" >&2; exit 1; }
banner() { printf '\n==> %s\n' "$*" >&2; }

# Run a command as root (directly, or through non-interactive sudo).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

APT_UPDATED=0
# apt_install PKG... : install Debian packages (apt-get update once per run).
apt_install() {
    command -v apt-get >/dev/null 2>&1 || { warn "apt-get not available; cannot install $*"; return 1; }
    local aptlog="$RUN_DIR/apt.log"
    mkdir -p "$RUN_DIR"
    log "installing Debian package(s): $* (log: ${aptlog#"$ROOT"/})"
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$aptlog" 2>&1 ||
            { tail -n 20 "$aptlog" >&2; warn "apt-get update failed"; return 1; }
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >>"$aptlog" 2>&1 ||
        { tail -n 20 "$aptlog" >&2; warn "apt-get install $* failed"; return 1; }
}

# need_cmd CMD PKG : make sure CMD exists, installing PKG if not.
need_cmd() {
    command -v "$1" >/dev/null 2>&1 && return 0
    apt_install "$2" || return 1
    command -v "$1" >/dev/null 2>&1
}

# ---------------------------------------------------------------- ports --

# port_listening PORT : true if something accepts TCP on 127.0.0.1:PORT.
port_listening() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# port_free PORT : true if nothing is bound to PORT (any address).
port_free() {
    local p=$1
    if command -v ss >/dev/null 2>&1; then
        [ -z "$(ss -Htln "( sport = :$p )" 2>/dev/null)" ] || return 1
    fi
    ! port_listening "$p"
}

# free_port START [END] : print the first free port in [START, END].
free_port() {
    local p=$1 end=${2:-$(($1 + 200))}
    while [ "$p" -le "$end" ]; do
        if port_free "$p"; then echo "$p"; return 0; fi
        p=$((p + 1))
    done
    return 1
}

# wait_until SECONDS DESCRIPTION CMD... : poll CMD every 0.5 s, bounded.
wait_until() {
    local secs=$1 what=$2 i tries
    shift 2
    tries=$((secs * 2))
    for ((i = 0; i < tries; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    warn "timed out after ${secs}s waiting for ${what}"
    return 1
}

# ------------------------------------------------------------- pidfiles --

# pid_of NAME : print pid recorded for private server NAME.
pid_of() { [ -s "$RUN_DIR/$1.pid" ] && head -n1 "$RUN_DIR/$1.pid" | tr -dc '0-9'; }

# pid_matches PID PROG : PID is alive and its command line mentions PROG.
pid_matches() {
    local pid=$1 prog=$2
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ -r "/proc/$pid/cmdline" ] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$prog"
}

# prog_of NAME : which executable a private server NAME runs.
prog_of() {
    case $1 in
        redis-cluster-*|redis) echo redis-server ;;
        memcached) echo memcached ;;
        postgres) echo postgres ;;
        mysql) echo mariadbd ;;
        *) echo "$1" ;;
    esac
}

# private_alive NAME : the recorded private server NAME is still running.
private_alive() {
    pid_matches "$(pid_of "$1")" "$(prog_of "$1")"
}

# stop_private NAME : stop private server NAME (bounded), remove its files.
stop_private() {
    local name=$1 pid prog i dir
    pid=$(pid_of "$name" || true)
    prog=$(prog_of "$name")
    if [ -n "$pid" ] && pid_matches "$pid" "$prog"; then
        log "stopping private $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 40; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) did not stop after 10s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    if [ -s "$RUN_DIR/$name.dir" ]; then
        dir=$(cat "$RUN_DIR/$name.dir")
        case $dir in /tmp/sessions-test-*) rm -rf -- "$dir" ;; esac
    fi
    rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.port" "$RUN_DIR/$name.dir"
}

# record_private NAME PID PORT [DIR]
record_private() {
    echo "$2" >"$RUN_DIR/$1.pid"
    echo "$3" >"$RUN_DIR/$1.port"
    [ -z "${4:-}" ] || echo "$4" >"$RUN_DIR/$1.dir"
}

# stop_started_here : stop servers this invocation started (EXIT trap).
stop_started_here() {
    local name
    [ "${#STARTED_HERE[@]}" -gt 0 ] || return 0
    banner "stopping private test servers started by this run"
    for name in "${STARTED_HERE[@]}"; do
        stop_private "$name"
        case $name in redis-cluster-*) rm -rf -- "$RUN_DIR/redis-cluster" "$RUN_DIR/cluster.ports" ;; esac
    done
    STARTED_HERE=()
    # The env file would point to servers that are gone.
    rm -f "$ENV_FILE"
}

# stop_all_private : stop every private server recorded in $RUN_DIR.
stop_all_private() {
    local f name n=0
    if [ -d "$RUN_DIR" ]; then
        for f in "$RUN_DIR"/*.pid; do
            [ -e "$f" ] || continue
            name=$(basename "$f" .pid)
            stop_private "$name"
            n=$((n + 1))
        done
        rm -rf -- "$RUN_DIR/redis-cluster" "$RUN_DIR/cluster.ports"
    fi
    rm -f "$ENV_FILE"
    log "stopped $n private server(s); standard-port services were left alone"
}

# ----------------------------------------------------------- PostgreSQL --

PG_START_HINT="pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"

pg_ok() { # PORT
    PGCONNECT_TIMEOUT=3 psql -X -h 127.0.0.1 -p "$1" -U postgres -d test -Atqc 'select 1' 2>/dev/null | grep -qx 1
}
pg_up() { # PORT : server answers (database test may be missing)
    PGCONNECT_TIMEOUT=3 psql -X -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atqc 'select 1' 2>/dev/null | grep -qx 1
}
pg_make_test_db() { # PORT
    pg_ok "$1" && return 0
    pg_up "$1" || return 1
    log "creating database 'test' on 127.0.0.1:$1"
    PGCONNECT_TIMEOUT=3 psql -X -h 127.0.0.1 -p "$1" -U postgres -d postgres -qc 'CREATE DATABASE test' >&2 || true
    pg_ok "$1"
}

pg_bindir() {
    local d
    # shellcheck disable=SC2012
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

pg_start_private() {
    local bindir port dir runas=() pid
    bindir=$(pg_bindir) || { apt_install postgresql && bindir=$(pg_bindir); } || return 1
    port=$(free_port 15432) || return 1
    dir=$(mktemp -d /tmp/sessions-test-pg.XXXXXX)
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir" 2>/dev/null || return 1
        runas=(runuser -u postgres --)
    fi
    log "starting private PostgreSQL on 127.0.0.1:$port (data in $dir)"
    "${runas[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust >"$RUN_DIR/postgres.log" 2>&1 || {
        warn "initdb failed, see $RUN_DIR/postgres.log"; rm -rf -- "$dir"; return 1; }
    "${runas[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >>"$RUN_DIR/postgres.log" 2>&1 || {
        warn "pg_ctl start failed, see $dir/server.log"; return 1; }
    pid=$(head -n1 "$dir/data/postmaster.pid")
    record_private postgres "$pid" "$port" "$dir"
    STARTED_HERE+=(postgres)
    pg_make_test_db "$port"
}

ensure_postgres() {
    need_cmd psql postgresql-client || die "PostgreSQL client 'psql' is missing and could not be installed (apt-get install postgresql-client)."
    if pg_make_test_db 5432; then
        log "PostgreSQL: reusing server on 127.0.0.1:5432"; PG_PORT=5432; return 0
    fi
    if private_alive postgres && pg_ok "$(cat "$RUN_DIR/postgres.port")"; then
        PG_PORT=$(cat "$RUN_DIR/postgres.port"); log "PostgreSQL: reusing private server on 127.0.0.1:$PG_PORT"; return 0
    fi
    stop_private postgres
    if ! port_listening 5432 && [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        log "PostgreSQL: not reachable; trying: $PG_START_HINT"
        # shellcheck disable=SC2046
        as_root pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start >&2 || true
        if wait_until 30 "PostgreSQL on 127.0.0.1:5432" pg_up 5432 && pg_make_test_db 5432; then
            log "PostgreSQL: started system server on 127.0.0.1:5432"; PG_PORT=5432; return 0
        fi
    fi
    if pg_start_private; then
        PG_PORT=$(cat "$RUN_DIR/postgres.port"); return 0
    fi
    die "PostgreSQL is not reachable on 127.0.0.1:5432 (database 'test', user postgres, trust auth) and a private one could not be started.
       Start it with:  $PG_START_HINT
       (and create the database with: createdb -h 127.0.0.1 -U postgres test)"
}

# -------------------------------------------------------------- MariaDB --

MYSQL_START_HINT="start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"

mysql_cli() { if command -v mariadb >/dev/null 2>&1; then mariadb "$@"; else mysql "$@"; fi; }
mysql_up() { # PORT
    mysql_cli --protocol=TCP -h 127.0.0.1 -P "$1" -uroot --connect-timeout=3 -Nse 'select 1' 2>/dev/null | grep -qx 1
}
mysql_ok() { # PORT
    mysql_cli --protocol=TCP -h 127.0.0.1 -P "$1" -uroot --connect-timeout=3 -Nse 'select 1' test 2>/dev/null | grep -qx 1
}
mysql_make_test_db() { # PORT
    mysql_ok "$1" && return 0
    mysql_up "$1" || return 1
    log "creating database 'test' on 127.0.0.1:$1"
    mysql_cli --protocol=TCP -h 127.0.0.1 -P "$1" -uroot -e 'CREATE DATABASE IF NOT EXISTS test' >&2 || true
    mysql_ok "$1"
}

mysql_start_private() {
    local port dir userarg=() pid
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server || return 1
    port=$(free_port 13306) || return 1
    dir=$(mktemp -d /tmp/sessions-test-mysql.XXXXXX)
    [ "$(id -u)" -ne 0 ] || userarg=(--user=root)
    log "starting private MariaDB on 127.0.0.1:$port (data in $dir)"
    mariadb-install-db --no-defaults "${userarg[@]}" --datadir="$dir/data" \
        --auth-root-authentication-method=normal --skip-test-db >"$RUN_DIR/mysql.log" 2>&1 || {
        warn "mariadb-install-db failed, see $RUN_DIR/mysql.log"; rm -rf -- "$dir"; return 1; }
    /usr/sbin/mariadbd --no-defaults "${userarg[@]}" --datadir="$dir/data" --port="$port" \
        --bind-address=127.0.0.1 --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
        --log-error="$dir/error.log" --skip-name-resolve </dev/null >/dev/null 2>&1 &
    pid=$!
    disown "$pid" 2>/dev/null || true
    record_private mysql "$pid" "$port" "$dir"
    STARTED_HERE+=(mysql)
    wait_until 60 "private MariaDB on 127.0.0.1:$port" mysql_up "$port" || {
        warn "see $dir/error.log"; return 1; }
    mysql_make_test_db "$port"
}

ensure_mysql() {
    command -v mariadb >/dev/null 2>&1 || need_cmd mysql mariadb-client ||
        die "MariaDB client is missing and could not be installed (apt-get install mariadb-client)."
    if mysql_make_test_db 3306; then
        log "MariaDB: reusing server on 127.0.0.1:3306"; MYSQL_PORT=3306; return 0
    fi
    if private_alive mysql && mysql_ok "$(cat "$RUN_DIR/mysql.port")"; then
        MYSQL_PORT=$(cat "$RUN_DIR/mysql.port"); log "MariaDB: reusing private server on 127.0.0.1:$MYSQL_PORT"; return 0
    fi
    stop_private mysql
    if ! port_listening 3306 && [ -x /usr/sbin/mariadbd ] && command -v start-stop-daemon >/dev/null 2>&1; then
        log "MariaDB: not reachable; trying: $MYSQL_START_HINT"
        as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >&2 || true
        if wait_until 60 "MariaDB on 127.0.0.1:3306" mysql_up 3306 && mysql_make_test_db 3306; then
            log "MariaDB: started system server on 127.0.0.1:3306"; MYSQL_PORT=3306; return 0
        fi
    fi
    if mysql_start_private; then
        MYSQL_PORT=$(cat "$RUN_DIR/mysql.port"); return 0
    fi
    die "MariaDB/MySQL is not reachable on 127.0.0.1:3306 (user root, empty password, database 'test') and a private one could not be started.
       Start it with:  $MYSQL_START_HINT"
}

# ---------------------------------------------------- Redis (standalone) --

REDIS_START_HINT='redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log'

redis_ok() { # PORT
    [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

ensure_redis() {
    need_cmd redis-cli redis-tools || die "redis-cli is missing and could not be installed (apt-get install redis-tools)."
    if redis_ok 6379; then
        log "Redis: reusing server on 127.0.0.1:6379"; REDIS_PORT=6379; return 0
    fi
    if private_alive redis && redis_ok "$(cat "$RUN_DIR/redis.port")"; then
        REDIS_PORT=$(cat "$RUN_DIR/redis.port"); log "Redis: reusing private server on 127.0.0.1:$REDIS_PORT"; return 0
    fi
    stop_private redis
    if ! port_listening 6379 && command -v redis-server >/dev/null 2>&1; then
        log "Redis: not reachable; trying: $REDIS_START_HINT"
        as_root mkdir -p /var/lib/redis /var/log/redis || true
        as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2 || true
        if wait_until 15 "Redis on 127.0.0.1:6379" redis_ok 6379; then
            log "Redis: started system server on 127.0.0.1:6379"; REDIS_PORT=6379; return 0
        fi
    fi
    # Private instance.
    need_cmd redis-server redis-server || die "Redis is not reachable on 127.0.0.1:6379 and redis-server could not be installed.
       Start it with:  $REDIS_START_HINT"
    local port
    port=$(free_port 16379) || die "no free port for a private Redis"
    mkdir -p "$RUN_DIR/redis-standalone"
    log "starting private Redis on 127.0.0.1:$port"
    if redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
        --dir "$RUN_DIR/redis-standalone" --pidfile "$RUN_DIR/redis.pid" \
        --logfile "$RUN_DIR/redis-standalone/redis.log" >&2 &&
        wait_until 15 "private Redis on 127.0.0.1:$port" redis_ok "$port"; then
        echo "$port" >"$RUN_DIR/redis.port"
        STARTED_HERE+=(redis)
        REDIS_PORT=$port; return 0
    fi
    die "Redis is not reachable on 127.0.0.1:6379 and a private one could not be started.
       Start it with:  $REDIS_START_HINT"
}

# ------------------------------------------------------- Redis Cluster --

CLUSTER_NODES=3

cluster_node_ok() { # PORT
    local info
    info=$(timeout 3 redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | tr -d '\r') || return 1
    grep -qx 'cluster_state:ok' <<<"$info" &&
        grep -qx 'cluster_slots_assigned:16384' <<<"$info" &&
        grep -qx "cluster_known_nodes:$CLUSTER_NODES" <<<"$info"
}
cluster_all_ok() {
    local p
    for p in "$@"; do cluster_node_ok "$p" || return 1; done
}

# Reuse a private cluster from an earlier run if it is healthy.
cluster_reuse() {
    local ports=() p
    [ -s "$RUN_DIR/cluster.ports" ] || return 1
    read -r -a ports <"$RUN_DIR/cluster.ports"
    [ "${#ports[@]}" -eq "$CLUSTER_NODES" ] || return 1
    for p in "${ports[@]}"; do
        private_alive "redis-cluster-$p" || return 1
    done
    cluster_all_ok "${ports[@]}" || return 1
    CLUSTER_PORTS=("${ports[@]}")
}

cluster_stop_stale() {
    local f
    for f in "$RUN_DIR"/redis-cluster-*.pid; do
        [ -e "$f" ] || continue
        stop_private "$(basename "$f" .pid)"
    done
    rm -rf -- "$RUN_DIR/redis-cluster" "$RUN_DIR/cluster.ports"
}

ensure_redis_cluster() {
    need_cmd redis-server redis-server || die "Redis Cluster: redis-server is missing and could not be installed (apt-get install redis-server)."
    if cluster_reuse; then
        log "Redis Cluster: reusing private cluster on ports ${CLUSTER_PORTS[*]}"; return 0
    fi
    cluster_stop_stale
    local dir="$RUN_DIR/redis-cluster" p=7101 port ports=() addrs=()
    mkdir -p "$dir"
    # Each node needs PORT and its cluster bus PORT+10000 free.
    while [ "${#ports[@]}" -lt "$CLUSTER_NODES" ] && [ "$p" -le 7299 ]; do
        if port_free "$p" && port_free $((p + 10000)); then ports+=("$p"); fi
        p=$((p + 1))
    done
    [ "${#ports[@]}" -eq "$CLUSTER_NODES" ] || die "Redis Cluster: no $CLUSTER_NODES free ports in 7101-7299 (plus bus ports +10000)."
    log "starting private Redis Cluster nodes on ports ${ports[*]}"
    for port in "${ports[@]}"; do
        redis-server --port "$port" --bind 127.0.0.1 --protected-mode no \
            --cluster-enabled yes --cluster-config-file "$dir/nodes-$port.conf" --cluster-node-timeout 5000 \
            --save "" --appendonly no --dir "$dir" --daemonize yes \
            --pidfile "$RUN_DIR/redis-cluster-$port.pid" --logfile "$dir/redis-$port.log" >&2 ||
            die "Redis Cluster: redis-server failed to start on port $port (see $dir/redis-$port.log)"
        STARTED_HERE+=("redis-cluster-$port")
        addrs+=("127.0.0.1:$port")
    done
    echo "${ports[*]}" >"$RUN_DIR/cluster.ports"
    for port in "${ports[@]}"; do
        wait_until 15 "Redis Cluster node 127.0.0.1:$port" redis_ok "$port" ||
            die "Redis Cluster: node on port $port did not come up (see $dir/redis-$port.log)"
        echo "$port" >"$RUN_DIR/redis-cluster-$port.port"
    done
    log "creating cluster: redis-cli --cluster create ${addrs[*]} --cluster-replicas 0 --cluster-yes"
    timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 || {
        cat "$dir/create.log" >&2
        die "Redis Cluster: 'redis-cli --cluster create' failed (see above)."
    }
    wait_until 30 "cluster_state:ok on all Redis Cluster nodes" cluster_all_ok "${ports[@]}" ||
        die "Redis Cluster: nodes ${ports[*]} did not reach cluster_state:ok within 30s (logs in $dir)."
    CLUSTER_PORTS=("${ports[@]}")
    log "Redis Cluster: ok on ports ${ports[*]}"
}

# ------------------------------------------------------------ Memcached --

MIN_ITEM_SIZE=$((8 * 1024 * 1024))

# mc_cmd PORT COMMAND : send one memcached text command, print the reply.
mc_cmd() {
    # shellcheck disable=SC2016
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "%s\r\nquit\r\n" "$2" >&3
        cat <&3' _ "$1" "$2" 2>/dev/null | tr -d '\r'
}
mc_ok() { mc_cmd "$1" stats | grep -q '^STAT pid '; }
mc_item_size() { mc_cmd "$1" 'stats settings' | awk '$2 == "item_size_max" { print $3 }'; }

ensure_memcached() {
    local size port
    if mc_ok 11211; then
        size=$(mc_item_size 11211)
        if [ -n "$size" ] && [ "$size" -ge "$MIN_ITEM_SIZE" ]; then
            log "Memcached: reusing server on 127.0.0.1:11211 (item_size_max=$size)"; MEMCACHED_PORT=11211; return 0
        fi
        log "Memcached on 127.0.0.1:11211 has item_size_max=${size:-unknown} (< 8 MiB); starting a private one"
    fi
    if private_alive memcached && mc_ok "$(cat "$RUN_DIR/memcached.port")"; then
        MEMCACHED_PORT=$(cat "$RUN_DIR/memcached.port"); log "Memcached: reusing private server on 127.0.0.1:$MEMCACHED_PORT"; return 0
    fi
    stop_private memcached
    if ! command -v memcached >/dev/null 2>&1; then
        apt_install memcached || true
        command -v memcached >/dev/null 2>&1 || die "Memcached is not installed and could not be installed.
       Install it with:  apt-get update && apt-get install -y memcached"
    fi
    port=$(free_port 11311) || die "no free port for a private Memcached"
    local userarg=()
    [ "$(id -u)" -ne 0 ] || userarg=(-u root)
    log "starting private Memcached on 127.0.0.1:$port (-I 8m -m 256)"
    memcached -d "${userarg[@]}" -P "$RUN_DIR/memcached.pid" -p "$port" -I 8m -m 256 -l 127.0.0.1 -U 0 \
        2>"$RUN_DIR/memcached.log" || die "Memcached failed to start (see $RUN_DIR/memcached.log).
       Start one by hand with:  memcached -d -u root -p 11211 -I 8m -m 256 -l 127.0.0.1 -U 0"
    STARTED_HERE+=(memcached)
    echo "$port" >"$RUN_DIR/memcached.port"
    wait_until 15 "Memcached on 127.0.0.1:$port" mc_ok "$port" ||
        die "Memcached did not answer on 127.0.0.1:$port (see $RUN_DIR/memcached.log)."
    MEMCACHED_PORT=$port
}

# ---------------------------------------------------------------- browser --

# ensure_browser : Debian's Chromium and chromedriver, for session-cli's browser test
# (session-cli/tests/browser.rs, which fails when they are missing).
ensure_browser() {
    banner "browser for the demo's end-to-end test (session-cli/tests/browser.rs)"
    if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
        log "Chromium: /usr/bin/chromium and /usr/bin/chromedriver are installed"; return 0
    fi
    apt_install chromium chromium-driver || true
    [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || die "Chromium and chromedriver are not installed and could not be installed.
       Install them with:  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver"
}

# ---------------------------------------------------------------- env --

# export_test_env : export the SESSIONS_TEST_* variables and write $ENV_FILE.
export_test_env() {
    local urls="" p
    for p in "${CLUSTER_PORTS[@]}"; do urls="${urls:+$urls,}redis://127.0.0.1:$p"; done
    export SESSIONS_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PG_PORT/test"
    export SESSIONS_TEST_MYSQL_URL="mysql://root@127.0.0.1:$MYSQL_PORT/test"
    export SESSIONS_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    export SESSIONS_TEST_REDIS_CLUSTER_URLS="$urls"
    export SESSIONS_TEST_MEMCACHED_URL="memcache://127.0.0.1:$MEMCACHED_PORT"
    mkdir -p "$(dirname "$ENV_FILE")"
    {
        echo "# Written by scripts/test on $(date -u +%Y-%m-%dT%H:%M:%SZ). Source it, then run cargo test by hand."
        echo "# Private servers listed in target/test-servers/ stop with: scripts/test --stop"
        for v in SESSIONS_TEST_POSTGRES_URL SESSIONS_TEST_MYSQL_URL SESSIONS_TEST_REDIS_URL \
            SESSIONS_TEST_REDIS_CLUSTER_URLS SESSIONS_TEST_MEMCACHED_URL; do
            printf "export %s='%s'\n" "$v" "${!v}"
        done
    } >"$ENV_FILE"
}

# ensure_all_servers : make every server reachable and export the env.
ensure_all_servers() {
    mkdir -p "$RUN_DIR"
    banner "test servers (private ones tracked in ${RUN_DIR#"$ROOT"/})"
    ensure_postgres
    ensure_mysql
    ensure_redis
    ensure_redis_cluster
    ensure_memcached
    ensure_browser
    export_test_env
    banner "test server environment (also in ${ENV_FILE#"$ROOT"/})"
    env | grep '^SESSIONS_TEST_' | sort | sed 's/^/    /' >&2
}
