//! Build glue for the workspace: `cargo xtask run | test | plugins | bench`.
//!
//! Everything here shells out to `cargo` and to the built binaries with
//! `std::process::Command`, from the workspace root, passing the environment through.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build glue: cargo xtask run | test | plugins | bench"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build `loyalty` and serve on 127.0.0.1:8080 with SQLite under ./data/.
    ///
    /// Takes `LOYALTY_OPERATOR_KEY` from the environment if set (otherwise the server
    /// generates one and prints it). Extra arguments after `--` go to `loyalty serve`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run the whole test suite (SQLite always, PostgreSQL when TEST_DATABASE_URL is set)
    /// and the API tour (examples/api-tour.sh) against a fresh server.
    Test,
    /// Build every Wasm component: the example plugins (`plugins/`), the test guests
    /// (`tests/plugins/`) and the Python example, into `<target>/plugins/`.
    Plugins,
    /// Benchmarks (release builds).
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Purchases over HTTP vs. the bare durable-commit rate, SQLite and PostgreSQL.
    /// Arguments (e.g. `--quick`, `--postgres <url>`, `--help`) go to `loyalty-bench ledger`,
    /// except `--sync-delay-us <N>` (Linux): the benchmark and the server it starts then run
    /// with every fsync and fdatasync taking N µs more, as on a slower disk
    /// (bench/sync-delay, preloaded).
    #[command(disable_help_flag = true)]
    Ledger {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Plugin compile/load times, fresh-instance call latency and throughput, and purchases/s
    /// with the earn-base-rate plugin vs the built-in rate. Arguments (e.g. `--quick`,
    /// `--help`) go to `loyalty-bench plugins`.
    #[command(disable_help_flag = true)]
    Plugins {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// `loyalty import online-retail` of the full data set (../shared/data/) into a fresh
    /// SQLite database and merchant with every example plugin enabled, then `loyalty verify`.
    /// Arguments (e.g. `--concurrency 128`) go to `loyalty import online-retail`.
    #[command(disable_help_flag = true)]
    Import {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run { args } => run(&args),
        Cmd::Test => test(),
        Cmd::Plugins => ensure_toolchain().and_then(|()| plugins()),
        Cmd::Bench {
            which: BenchCmd::Ledger { args },
        } => bench("ledger", &args),
        Cmd::Bench {
            which: BenchCmd::Plugins { args },
        } => ensure_toolchain()
            .and_then(|()| plugins())
            .and_then(|()| bench("plugins", &args)),
        Cmd::Bench {
            which: BenchCmd::Import { args },
        } => ensure_toolchain().and_then(|()| bench_import(&args)),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// paths and helpers

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

fn exe(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

/// `cargo`, as the one that invoked us (falls back to `cargo` on PATH).
fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a command to completion, failing on a non-zero exit.
fn run_checked(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    eprintln!("xtask: $ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    check_status(status, &line)
}

fn check_status(status: ExitStatus, what: &str) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{what}` failed ({status})")
    }
}

/// Whether the command runs and exits 0 (output discarded).
fn succeeds(mut cmd: Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// 128 random bits as hex, from the OS (falls back to time, pid and std's hasher seed).
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    let from_os = fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_os {
        use std::collections::hash_map::RandomState;
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            h.write_u32(std::process::id());
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding an ephemeral port")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

/// One `GET /healthz` over plain HTTP/1.1; true on a 200.
fn healthz_ok(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() {
        match stream.read(&mut head[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
        if head[..len].contains(&b'\n') {
            break;
        }
    }
    let status_line = String::from_utf8_lossy(&head[..len]);
    let mut parts = status_line.split_whitespace();
    matches!(
        (parts.next(), parts.next()),
        (Some(v), Some("200")) if v.starts_with("HTTP/")
    )
}

/// A server child process that is killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    fn print_log_tail(&self) {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        eprintln!("xtask: --- last lines of {} ---", self.log.display());
        for line in &lines[start..] {
            eprintln!("  {line}");
        }
        eprintln!("xtask: ---");
    }

    /// Polls `GET /healthz` until it answers 200 (or the process dies, or `timeout` passes).
    fn wait_healthy(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if healthz_ok(port) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().context("polling the server")? {
                self.print_log_tail();
                bail!("the server exited before becoming healthy ({status})");
            }
            if start.elapsed() > timeout {
                self.print_log_tail();
                bail!(
                    "the server did not answer GET /healthz with 200 within {}s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", &random_hex()[..12]));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn build_loyalty_debug() -> Result<PathBuf> {
    run_checked(cargo().args(["build", "-p", "loyalty-host", "--bin", "loyalty"]))?;
    let bin = target_dir().join("debug").join(exe("loyalty"));
    if !bin.exists() {
        bail!("built, but {} is missing", bin.display());
    }
    Ok(bin)
}

// ---------------------------------------------------------------------------------------------
// cargo xtask run

fn run(extra: &[OsString]) -> Result<()> {
    let root = workspace_root();
    ensure_toolchain()?;
    build_components("plugins/Cargo.toml")?;
    let bin = build_loyalty_debug()?;
    fs::create_dir_all(root.join("data")).context("creating ./data/")?;
    // The demo merchant (seeded once; a fresh admin key every run).
    let mut demo = Command::new(&bin);
    demo.current_dir(&root)
        .args(["demo", "--database", "sqlite://data/loyalty.db", "--slice"])
        .arg(
            root.join("tests")
                .join("fixtures")
                .join("online_retail_slice.csv"),
        )
        .arg("--components")
        .arg(plugins_target_dir().join(PLUGIN_TARGET).join("release"));
    run_checked(&mut demo)?;

    let mut cmd = Command::new(&bin);
    cmd.current_dir(&root)
        .args([
            "serve",
            "--database",
            "sqlite://data/loyalty.db",
            "--listen",
            "127.0.0.1:8080",
        ])
        .args(extra);
    // LOYALTY_OPERATOR_KEY (if set) reaches the server through the inherited environment;
    // the server prints the key it uses either way.
    if std::env::var_os("LOYALTY_OPERATOR_KEY").is_some() {
        eprintln!("xtask: using LOYALTY_OPERATOR_KEY from the environment");
    }
    eprintln!("xtask: $ {}", describe(&cmd));

    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Replace this process so Ctrl-C and signals go straight to the server.
        let err = cmd.exec();
        Err(err).with_context(|| format!("could not start {}", bin.display()))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .with_context(|| format!("could not start {}", bin.display()))?;
        check_status(status, "loyalty serve")
    }
}

// ---------------------------------------------------------------------------------------------
// cargo xtask test

/// The target plugins are built for: `cargo build` emits a component directly.
const PLUGIN_TARGET: &str = "wasm32-wasip2";

/// Makes sure the toolchain the suite needs is present: a working `cargo`, and the
/// `wasm32-wasip2` standard library (installed with `rustup` when it is missing).
fn ensure_toolchain() -> Result<()> {
    let out = cargo()
        .arg("--version")
        .output()
        .context("could not run `cargo --version`")?;
    if !out.status.success() {
        bail!("`cargo --version` failed ({})", out.status);
    }
    eprintln!(
        "xtask: toolchain: {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if out.status.success() => {
            let has_target = String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line.trim() == PLUGIN_TARGET);
            if !has_target {
                run_checked(Command::new("rustup").args(["target", "add", PLUGIN_TARGET]))?;
            }
        }
        // Without rustup the target must come with the toolchain; the build says if not.
        _ => eprintln!("xtask: no rustup; assuming the {PLUGIN_TARGET} target is installed"),
    }
    Ok(())
}

/// Where the components land: `<target>/plugins/<PLUGIN_TARGET>/release/*.wasm`, and the
/// Python example under `<target>/plugins/python/`.
fn plugins_target_dir() -> PathBuf {
    target_dir().join("plugins")
}

/// Builds the components of one plugin workspace (`manifest`, from the workspace root) into
/// `<target>/plugins/`.
fn build_components(manifest: &str) -> Result<()> {
    run_checked(
        cargo()
            .args([
                "build",
                "--release",
                "--target",
                PLUGIN_TARGET,
                "--manifest-path",
            ])
            .arg(workspace_root().join(manifest))
            .arg("--target-dir")
            .arg(plugins_target_dir()),
    )
}

/// Builds every component. The plugin workspaces have their own release profile (tuned for
/// size), so they build in a target directory of their own.
fn plugins() -> Result<()> {
    let root = workspace_root();
    let out = plugins_target_dir();
    for manifest in ["plugins/Cargo.toml", "tests/plugins/Cargo.toml"] {
        build_components(manifest)?;
    }
    let python = root
        .join("examples")
        .join("python-earn-rule")
        .join("build.sh");
    if python.exists() {
        run_checked(
            Command::new("bash")
                .current_dir(&root)
                .arg(&python)
                .arg(out.join("python")),
        )?;
    }
    let release = out.join(PLUGIN_TARGET).join("release");
    let mut built: Vec<(String, u64)> = fs::read_dir(&release)
        .with_context(|| format!("reading {}", release.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "wasm"))
        .filter_map(|entry| {
            let size = entry.metadata().ok()?.len();
            Some((entry.file_name().to_string_lossy().into_owned(), size))
        })
        .collect();
    built.sort();
    for (name, size) in built {
        eprintln!("xtask: component {name}: {size} bytes");
    }
    Ok(())
}

fn test() -> Result<()> {
    ensure_toolchain()?;

    match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            eprintln!("xtask: PostgreSQL tests: ON (TEST_DATABASE_URL is set)")
        }
        _ => eprintln!(
            "xtask: PostgreSQL tests: OFF (set TEST_DATABASE_URL=postgres://... to run them)"
        ),
    }

    let mut failures = Vec::new();

    // The runtime's and the server's tests load real components.
    plugins()?;
    // The plugins' own unit tests, natively, through the SDK's test harness.
    if let Err(err) = run_checked(
        cargo()
            .args(["test", "--manifest-path"])
            .arg(workspace_root().join("plugins").join("Cargo.toml"))
            .arg("--target-dir")
            .arg(plugins_target_dir()),
    ) {
        eprintln!("xtask: plugin unit tests FAILED: {err:#}");
        failures.push("plugin unit tests");
    }
    // The Python example's rule logic, with the standard library's unittest.
    let python_tests = workspace_root()
        .join("examples")
        .join("python-earn-rule")
        .join("tests");
    if python_tests.exists() {
        if let Err(err) = run_checked(
            Command::new("python3")
                .args(["-m", "unittest", "discover", "-s"])
                .arg(&python_tests),
        ) {
            eprintln!("xtask: Python plugin tests FAILED: {err:#}");
            failures.push("Python plugin tests");
        }
    }

    // Doc tests before the suite: its summary should be the last a reader (or CI) sees.
    if let Err(err) = run_checked(cargo().args(["test", "--workspace", "--doc", "--no-fail-fast"]))
    {
        eprintln!("xtask: doc tests FAILED: {err:#}");
        failures.push("doc tests");
    }

    let mut nextest = cargo();
    nextest.args(["nextest", "--version"]);
    // Run everything even after a failure, so one run shows all that is broken.
    let suite = if succeeds(nextest) {
        run_checked(cargo().args([
            "nextest",
            "run",
            "--workspace",
            "--no-fail-fast",
            "--no-tests=warn",
        ]))
    } else {
        run_checked(cargo().args(["test", "--workspace", "--all-targets", "--no-fail-fast"]))
    };
    if let Err(err) = suite {
        eprintln!("xtask: test suite FAILED: {err:#}");
        failures.push("test suite");
    }

    if let Err(err) = api_tour() {
        eprintln!("xtask: API tour FAILED: {err:#}");
        failures.push("API tour (examples/api-tour.sh)");
    }

    if failures.is_empty() {
        eprintln!("xtask: all tests passed");
        Ok(())
    } else {
        bail!("failed: {}", failures.join(", "))
    }
}

/// Runs `examples/api-tour.sh` against a fresh server on a temporary SQLite database.
fn api_tour() -> Result<()> {
    let root = workspace_root();
    let script = root.join("examples").join("api-tour.sh");
    if !script.exists() {
        eprintln!(
            "xtask: WARNING: {} does not exist yet; skipping the API tour",
            script.display()
        );
        return Ok(());
    }

    let bin = build_loyalty_debug()?;
    let tmp = TempDir::new("loyalty-tour")?;
    let port = free_port()?;
    let key = format!("op_{}", random_hex());
    let log = tmp.0.join("server.log");
    let log_file = fs::File::create(&log).context("creating the server log")?;

    let mut cmd = Command::new(&bin);
    cmd.current_dir(&root)
        .arg("serve")
        .arg("--database")
        .arg(format!("sqlite://{}", tmp.0.join("tour.db").display()))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("LOYALTY_OPERATOR_KEY", &key)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().context("duplicating the log handle")?)
        .stderr(log_file);
    eprintln!("xtask: $ {}", describe(&cmd));
    let child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", bin.display()))?;
    let mut server = Server { child, log };
    server.wait_healthy(port, Duration::from_secs(60))?;

    let mut tour = Command::new("bash");
    tour.current_dir(&root)
        .arg(&script)
        .env("BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("OPERATOR_KEY", &key);
    let result = run_checked(&mut tour);
    if result.is_err() {
        server.print_log_tail();
    }
    server.stop();
    result
}

// ---------------------------------------------------------------------------------------------
// cargo xtask bench ledger|plugins

/// Builds the server and the bench in release mode and runs `loyalty-bench <which> <args>`.
/// `--sync-delay-us <N>` among the args is xtask's: the bench runs with bench/sync-delay
/// preloaded (see [`sync_delay`]).
fn bench(which: &str, args: &[OsString]) -> Result<()> {
    let (sync_delay_us, args) = sync_delay(args)?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "loyalty-host",
        "-p",
        "loyalty-bench",
    ]);
    if sync_delay_us.is_some() {
        build.args(["-p", "loyalty-sync-delay"]);
    }
    run_checked(&mut build)?;
    let release = target_dir().join("release");
    let bench = release.join(exe("loyalty-bench"));
    let mut cmd = Command::new(&bench);
    cmd.current_dir(workspace_root())
        .arg(which)
        .arg("--loyalty-bin")
        .arg(release.join(exe("loyalty")))
        .args(args);
    if let Some(micros) = sync_delay_us {
        // Inherited by the server the bench starts; cargo and rustc above ran without it.
        cmd.env("LD_PRELOAD", release.join("libloyalty_sync_delay.so"))
            .env("LOYALTY_SYNC_DELAY_US", micros.to_string());
    }
    run_checked(&mut cmd)
}

/// The longest extra wait per flush bench/sync-delay takes (its `DELAY_US_MAX`).
const SYNC_DELAY_US_MAX: u64 = 100_000;

/// Takes `--sync-delay-us <N>` (or `--sync-delay-us=N`) out of the bench's arguments.
fn sync_delay(args: &[OsString]) -> Result<(Option<u64>, Vec<OsString>)> {
    let mut rest = Vec::with_capacity(args.len());
    let mut micros = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.to_str() {
            Some("--sync-delay-us") => args
                .next()
                .context("--sync-delay-us needs a number of microseconds")?
                .to_string_lossy()
                .into_owned(),
            Some(other) if other.starts_with("--sync-delay-us=") => {
                other["--sync-delay-us=".len()..].to_string()
            }
            _ => {
                rest.push(arg.clone());
                continue;
            }
        };
        micros = Some(
            value
                .parse::<u64>()
                .with_context(|| format!("--sync-delay-us {value}: not a number"))?,
        );
    }
    if micros.is_some_and(|micros| micros > SYNC_DELAY_US_MAX) {
        bail!("--sync-delay-us takes at most {SYNC_DELAY_US_MAX} µs (the library's own bound)");
    }
    if micros.is_some() && !cfg!(target_os = "linux") {
        bail!("--sync-delay-us works on Linux only (LD_PRELOAD)");
    }
    Ok((micros, rest))
}

// ---------------------------------------------------------------------------------------------
// cargo xtask bench import

/// The data set, beside the workspace (never copied into it).
fn online_retail_data() -> PathBuf {
    workspace_root()
        .join("..")
        .join("shared")
        .join("data")
        .join("online_retail.csv.gz")
}

/// Builds `loyalty` in release and the example plugins, then imports the full Online Retail
/// data set into a fresh SQLite database (in a temporary directory) and a fresh merchant
/// (`--create-merchant`) with every example plugin registered and enabled on every store
/// (`--plugin`), and runs `loyalty verify` on the result. The import prints its own summary:
/// counts, lines/s, purchases/s and the total time.
fn bench_import(args: &[OsString]) -> Result<()> {
    let root = workspace_root();
    let data = online_retail_data();
    if !data.exists() {
        bail!(
            "{} is missing: the data set lives in ../shared/data/",
            data.display()
        );
    }
    // the example plugins only: the test guests and the Python example are not needed
    build_components("plugins/Cargo.toml")?;
    run_checked(cargo().args([
        "build",
        "--release",
        "-p",
        "loyalty-host",
        "--bin",
        "loyalty",
    ]))?;
    let loyalty = target_dir().join("release").join(exe("loyalty"));
    let components = plugins_target_dir().join(PLUGIN_TARGET).join("release");
    let mut plugins: Vec<PathBuf> = fs::read_dir(root.join("plugins"))
        .context("reading plugins/")?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().replace('-', "_");
            components.join(format!("{name}.wasm"))
        })
        .collect();
    plugins.sort();
    for plugin in &plugins {
        if !plugin.exists() {
            bail!("{} was not built", plugin.display());
        }
    }
    let dir = TempDir::new("loyalty-bench-import")?;
    let url = format!("sqlite://{}", dir.0.join("import.db").display());
    let mut import = Command::new(&loyalty);
    import
        .current_dir(&root)
        .args(["import", "online-retail", "--file"])
        .arg(&data)
        .args([
            "--create-merchant",
            "Online Retail (bench)",
            "--database",
            &url,
        ])
        .arg("--plugin-cache-dir")
        .arg(plugins_target_dir().join("bench-cache"));
    for plugin in &plugins {
        import.arg("--plugin").arg(plugin);
    }
    // The tier policy needs its thresholds (in pence); the others run on their defaults.
    import.args([
        "--plugin-config",
        r#"tier-spend-threshold={"tiers":{"bronze":{"upgrade_at":0,"keep_at":0},"silver":{"upgrade_at":50000,"keep_at":30000},"gold":{"upgrade_at":200000,"keep_at":150000}}}"#,
    ]);
    import.args(args);
    let started = Instant::now();
    run_checked(&mut import)?;
    let elapsed = started.elapsed();
    run_checked(Command::new(&loyalty).args(["verify", "--database", &url]))?;
    println!(
        "bench import: the import command took {:.1} s (process start to exit), on SQLite \
         with {} example plugins enabled; verify passed",
        elapsed.as_secs_f64(),
        plugins.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn sync_delay_is_taken_out_of_the_bench_arguments() {
        let (micros, rest) = sync_delay(&args(&[
            "--quick",
            "--sync-delay-us",
            "500",
            "--only",
            "sqlite",
        ]))
        .expect("a number");
        assert_eq!(micros, Some(500));
        assert_eq!(rest, args(&["--quick", "--only", "sqlite"]));
        let (micros, rest) = sync_delay(&args(&["--sync-delay-us=250"])).expect("a number");
        assert_eq!(micros, Some(250));
        assert!(rest.is_empty());
        let (micros, rest) = sync_delay(&args(&["--quick"])).expect("nothing to take");
        assert_eq!(micros, None);
        assert_eq!(rest, args(&["--quick"]));
        assert!(sync_delay(&args(&["--sync-delay-us", "soon"])).is_err());
        assert!(sync_delay(&args(&["--sync-delay-us"])).is_err());
        assert!(sync_delay(&args(&["--sync-delay-us", "100001"])).is_err());
    }
}
