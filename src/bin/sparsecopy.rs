//! `sparsecopy [options] SRC DST`: see `extility::tools::sparsecopy`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use extility::size::parse_size;
use extility::tools::sparsecopy::{Options, Plan};

/// Copies a disk image like dd, keeping it sparse: zero blocks become holes in a file and are
/// cleared on a block device. Shows the partition table it copies and refuses one that does
/// not fit DST.
#[derive(Parser)]
#[command(
    name = "sparsecopy",
    version,
    arg_required_else_help = true,
    after_help = "Examples:\n  sparsecopy -f2G /dev/null myfs          a 2 GiB file using no space, for mkfs\n  \
                  gzip -dc myimage.img.gz | sparsecopy - /dev/sdb\n  \
                  sparsecopy myimage.img copy.img"
)]
struct Args {
    /// Size of DST: a file is made this long, a device is used up to it (2G, 512M, 100K)
    #[arg(short = 'f', long = "size", value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// Write even when SRC or its partition table does not fit DST
    #[arg(long)]
    force: bool,
    /// DST is a device that already reads as zeros: skip zero blocks instead of clearing them
    #[arg(long)]
    assume_zeroed: bool,
    /// Print only errors
    #[arg(short, long)]
    quiet: bool,
    /// A file, a block device, or - for standard input
    #[arg(value_name = "SRC")]
    src: PathBuf,
    /// A file, a block device, or - for standard output
    #[arg(value_name = "DST")]
    dst: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        src: args.src,
        dst: args.dst,
        size: args.size,
        force: args.force,
        assume_zeroed: args.assume_zeroed,
    };
    let say = |text: &str| {
        if !args.quiet {
            eprintln!("{text}");
        }
    };
    let mut plan = match Plan::new(&options) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("sparsecopy: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(table) = &plan.table {
        say(format!("SRC: {table}").trim_end());
    }
    if let Err(e) = plan.check() {
        eprintln!("sparsecopy: {e}");
        return ExitCode::FAILURE;
    }
    for warning in &plan.warnings {
        say(&format!("sparsecopy: warning: {warning}"));
    }
    let bar = progress_bar(plan.src_len, args.quiet);
    let started = Instant::now();
    let result = plan.execute(&mut |position| bar.set_position(position));
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            let seconds = started.elapsed().as_secs_f64();
            say(&format!(
                "sparsecopy: {} in {seconds:.2} s ({:.0} MB/s)",
                report.summary(),
                report.copied as f64 / seconds.max(1e-6) / 1e6
            ));
            for note in &report.notes {
                say(&format!("sparsecopy: {note}"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sparsecopy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A bar on a terminal (a spinner with the byte count when SRC's size is unknown); nothing
/// when standard error is not a terminal.
fn progress_bar(len: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let target = ProgressDrawTarget::stderr_with_hz(4);
    match len {
        Some(len) => ProgressBar::with_draw_target(Some(len), target).with_style(
            ProgressStyle::with_template(
                "{bytes:>10} / {total_bytes} [{bar:40}] {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::with_draw_target(None, target).with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    }
}
