//! `sparsecopy`, run as users run it.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use extility::tools::partition::{MbrEntry, mbr_sector};

use crate::support::tools::*;

const BLOCK: u64 = 4096;

/// Bytes that do not compress to nothing and are never a whole block of zeros.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) | 1
        })
        .collect()
}

/// A disk image of `len` bytes: an MBR (partition 1 from 1 MiB to the end), and data in
/// `data_blocks` scattered 4 KiB blocks; everything else zeros.
fn disk_image(path: &Path, len: u64, data_blocks: &[u64]) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(len).unwrap();
    let entry = MbrEntry {
        bootable: true,
        type_id: 0x83,
        first_sector: 2048,
        sectors: ((len >> 9) - 2048) as u32,
    };
    file.write_all_at(&mbr_sector(&[], 0x5eed, &[entry]), 0)
        .unwrap();
    for &block in data_blocks {
        file.write_all_at(&noise(BLOCK as usize, block), block * BLOCK)
            .unwrap();
    }
}

#[test]
fn no_arguments_print_usage_and_fail() {
    let out = output(&mut sparsecopy());
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("Usage: sparsecopy [OPTIONS] <SRC> <DST>"),
        "{text}"
    );
    assert!(text.contains("-f, --size <SIZE>"), "{text}");
}

#[test]
fn f2g_from_dev_null_makes_a_2_gib_file_that_uses_no_space() {
    let dir = tempfile::tempdir().unwrap();
    let myfs = dir.path().join("myfs");
    let out = output(sparsecopy().arg("-f2G").arg("/dev/null").arg(&myfs));
    assert_success(&out);
    assert_eq!(std::fs::metadata(&myfs).unwrap().len(), 2 << 30);
    assert!(
        allocated(&myfs) <= 64 << 10,
        "allocated {}",
        allocated(&myfs)
    );
    // ready for mkfs, as the seed uses it
    run_tool("mkfs.ext4", &["-q", "-F", myfs.to_str().unwrap()]);
}

#[test]
fn gzipped_image_through_stdin_keeps_its_md5_and_allocates_only_data() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("myimage.img");
    // 16 data blocks (the MBR's block among them), a length that is not a whole block
    let data_blocks: Vec<u64> = (0..15).map(|i| 3 + i * 517).collect();
    disk_image(&image, (32 << 20) + 1000, &data_blocks);
    let gz = dir.path().join("myimage.img.gz");
    let compressed = output(Command::new(system_tool("gzip")).arg("-c").arg(&image));
    assert_success(&compressed);
    write_file(&gz, &compressed.stdout);

    let copy = dir.path().join("copy.img");
    let mut gunzip = Command::new(system_tool("gzip"))
        .arg("-dc")
        .arg(&gz)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = sparsecopy()
        .arg("-")
        .arg(&copy)
        .stdin(gunzip.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(gunzip.wait().unwrap().success());
    assert_success(&out);

    assert_eq!(md5(&copy), md5(&image));
    let data = 16 * BLOCK;
    let used = allocated(&copy);
    assert!(
        used >= data && used <= data + (64 << 10),
        "allocated {used}, data {data}"
    );
    // It shows the table it copied and what it did.
    let text = stderr(&out);
    assert!(
        text.contains("MBR partition table, disk id 0x00005eed"),
        "{text}"
    );
    assert!(text.contains("83 Linux"), "{text}");
    assert!(text.contains("64.0 KiB written"), "{text}");
}

#[test]
fn a_sparse_file_is_copied_exactly_and_stays_sparse() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("sparse.img");
    let len = 256 << 20;
    disk_image(&image, len, &[10, 20_000, 65_535]);
    let copy = dir.path().join("copy.img");
    assert_success(&output(sparsecopy().arg(&image).arg(&copy)));
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), len);
    assert_eq!(md5(&copy), md5(&image));
    assert!(allocated(&copy) <= 4 * BLOCK + (64 << 10));
}

#[test]
fn a_partition_table_that_does_not_fit_dst_is_refused_without_force() {
    let dir = tempfile::tempdir().unwrap();
    // A 2 MiB image whose table says partition 1 runs to 64 MiB: a disk image cut short,
    // meant for a larger disk.
    let image = dir.path().join("short.img");
    disk_image(&image, 64 << 20, &[300]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let dst = dir.path().join("disk");

    let out = output(sparsecopy().arg("-f").arg("8M").arg(&image).arg(&dst));
    let text = assert_fails_with(&out, "the MBR partition table of SRC does not fit DST");
    assert!(text.contains("partition 1 ends at 64.0 MiB"), "{text}");
    assert!(text.contains("--force"), "{text}");
    assert!(!dst.exists(), "a refused copy must not create DST");

    let out = output(
        sparsecopy()
            .args(["--force", "-f", "8M"])
            .arg(&image)
            .arg(&dst),
    );
    assert_success(&out);
    assert!(stderr(&out).contains("writing it anyway"));
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 8 << 20);
    let copied = std::fs::read(&dst).unwrap();
    assert_eq!(&copied[..2 << 20], &std::fs::read(&image).unwrap()[..]);
    assert!(copied[2 << 20..].iter().all(|&b| b == 0));
}

#[test]
fn a_source_larger_than_dst_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big");
    write_file(&src, &noise(2 << 20, 7));
    let dst = dir.path().join("small");
    let out = output(sparsecopy().arg("-f1M").arg(&src).arg(&dst));
    assert_fails_with(&out, "holds 1.0 MiB but SRC is 2.0 MiB");
    assert!(!dst.exists());

    // Through a pipe the size shows only while copying.
    let out = sparsecopy()
        .arg("-f1M")
        .arg("-")
        .arg(&dst)
        .stdin(std::fs::File::open(&src).unwrap())
        .output()
        .unwrap();
    assert_fails_with(&out, "SRC has data beyond the end of DST");
    assert!(
        !dst.exists(),
        "a failed copy to a new file leaves nothing behind"
    );

    // Zeros beyond the end are no loss.
    let padded = dir.path().join("padded");
    let mut content = noise(512 << 10, 9);
    content.resize(3 << 20, 0);
    write_file(&padded, &content);
    let out = sparsecopy()
        .arg("-f1M")
        .arg("-")
        .arg(&dst)
        .stdin(std::fs::File::open(&padded).unwrap())
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(std::fs::read(&dst).unwrap(), &content[..1 << 20]);
}

#[test]
fn bad_paths_give_clear_errors_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.img");
    let out = output(sparsecopy().arg(&missing).arg(dir.path().join("x")));
    assert_fails_with(
        &out,
        &format!(
            "cannot open SRC {}: No such file or directory",
            missing.display()
        ),
    );

    let src = dir.path().join("src");
    write_file(&src, &noise(8192, 1));
    let out = output(sparsecopy().arg(&src).arg(dir.path()));
    assert_fails_with(&out, "it is a directory");

    let out = output(sparsecopy().arg(&src).arg(dir.path().join("no-dir/dst")));
    assert_fails_with(&out, "No such file or directory");

    let out = output(sparsecopy().arg(&src).arg(&src));
    assert_fails_with(&out, "SRC and DST are the same file");
    assert_eq!(
        std::fs::read(&src).unwrap(),
        noise(8192, 1),
        "SRC must be untouched"
    );

    let out = output(sparsecopy().arg("-f").arg("lots").arg(&src).arg("x"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("'lots' is not a size"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dst_dash_streams_every_byte_to_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("img");
    disk_image(&image, (8 << 20) + 100, &[5, 1000]);
    let out = sparsecopy().arg(&image).arg("-").output().unwrap();
    assert_success(&out);
    assert!(
        out.stdout == std::fs::read(&image).unwrap(),
        "stdout differs from SRC"
    );
    assert!(!dir.path().join("-").exists());
}
