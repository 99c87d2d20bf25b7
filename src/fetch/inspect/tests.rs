//! The inspector on images built byte by byte: the good ones it accepts, and each refusal.

use super::*;

const C: usize = 64 << 10;
const GIB: u64 = 1 << 30;

fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
fn put_le32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_le64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A qcow2 v3 image of `size` bytes with 64 KiB clusters: header, refcount table and block,
/// L1, one L2 and one data cluster.
fn qcow2(size: u64) -> Vec<u8> {
    let mut f = vec![0u8; 6 * C];
    f[..4].copy_from_slice(b"QFI\xfb");
    put_be32(&mut f, 4, 3);
    put_be32(&mut f, 20, 16);
    put_be64(&mut f, 24, size);
    put_be32(&mut f, 36, size.div_ceil((C * C / 8) as u64) as u32);
    put_be64(&mut f, 40, 3 * C as u64);
    put_be64(&mut f, 48, C as u64);
    put_be32(&mut f, 56, 1);
    put_be32(&mut f, 96, 4);
    put_be32(&mut f, 100, 104);
    put_be64(&mut f, C, 2 * C as u64);
    put_be64(&mut f, 3 * C, (4 * C) as u64 | 1 << 63);
    put_be64(&mut f, 4 * C, (5 * C) as u64 | 1 << 63);
    f[5 * C..].fill(0xab);
    f
}

fn check(image: &[u8], max: u64) -> Result<Inspected, Unsafe> {
    inspect(&image, image.len() as u64, max).unwrap()
}

fn refused(image: &[u8], max: u64, why: &str) {
    match check(image, max) {
        Err(Unsafe(reason)) => assert!(reason.contains(why), "{reason:?} should say {why:?}"),
        Ok(found) => panic!("accepted {found:?}; should be refused for {why:?}"),
    }
}

#[test]
fn formats_are_recognised_by_their_bytes() {
    assert_eq!(detect(&qcow2(GIB)), ImageFormat::Qcow2);
    assert_eq!(detect(b"KDMV...."), ImageFormat::Vmdk);
    assert_eq!(detect(b"# Disk DescriptorFile\n"), ImageFormat::Vmdk);
    assert_eq!(detect(b"conectix"), ImageFormat::Vhd);
    assert_eq!(detect(b"vhdxfile"), ImageFormat::Vhdx);
    let mut iso = vec![0u8; 40 << 10];
    iso[ISO_MAGIC_AT..ISO_MAGIC_AT + 5].copy_from_slice(b"CD001");
    assert_eq!(detect(&iso), ImageFormat::Iso);
    assert_eq!(detect(&[0u8; 4096]), ImageFormat::Raw);
    assert_eq!(detect(b""), ImageFormat::Raw);
    let raw = vec![7u8; 8192];
    let found = check(&raw, GIB).unwrap();
    assert_eq!((found.format, found.virtual_size), (ImageFormat::Raw, 8192));
    assert_eq!(ImageFormat::Vhd.qemu_driver(), Some("vpc"));
}

#[test]
fn a_plain_qcow2_is_accepted() {
    let image = qcow2(GIB);
    let found = check(&image, GIB).unwrap();
    assert_eq!(
        found,
        Inspected {
            format: ImageFormat::Qcow2,
            virtual_size: GIB,
            data_bound: C as u64,
            fixed_vhd: false,
        }
    );
    assert_eq!(check_head(&image[..C], GIB), Ok(ImageFormat::Qcow2));
    // Version 2 has no feature fields.
    let mut v2 = image.clone();
    put_be32(&mut v2, 4, 2);
    v2[72..104].fill(0);
    assert_eq!(check(&v2, GIB).unwrap().format, ImageFormat::Qcow2);
}

#[test]
fn a_qcow2_naming_a_backing_file_is_refused_from_its_header() {
    let mut image = qcow2(GIB);
    put_be64(&mut image, 8, 512);
    put_be32(&mut image, 16, 11);
    image[512..523].copy_from_slice(b"/etc/passwd");
    refused(&image, GIB, "backing file (\"/etc/passwd\")");
    let Err(Unsafe(reason)) = check_head(&image[..1024], GIB) else {
        panic!("the header alone shows the backing file");
    };
    assert!(reason.contains("/etc/passwd"), "{reason}");
}

#[test]
fn a_qcow2_with_an_external_data_file_is_refused() {
    let mut image = qcow2(GIB);
    put_be64(&mut image, 72, 1 << 2);
    refused(&image, GIB, "external data file");
    // The header extension naming it, even without the feature bit.
    let mut image = qcow2(GIB);
    put_be32(&mut image, 104, 0x4441_5441);
    put_be32(&mut image, 108, 10);
    image[112..122].copy_from_slice(b"/tmp/x.raw");
    refused(&image, GIB, "external data file (\"/tmp/x.raw\")");
}

#[test]
fn qcow2_features_it_does_not_know_encryption_and_corruption_are_refused() {
    let mut image = qcow2(GIB);
    put_be64(&mut image, 72, 1 << 9);
    refused(&image, GIB, "unknown incompatible features (0x200)");
    let mut image = qcow2(GIB);
    put_be64(&mut image, 72, 1 << 1);
    refused(&image, GIB, "marked corrupt");
    let mut image = qcow2(GIB);
    put_be32(&mut image, 32, 1);
    refused(&image, GIB, "encrypted");
    let mut image = qcow2(GIB);
    put_be32(&mut image, 4, 4);
    refused(&image, GIB, "version 4");
    // Known compatible bits are fine: dirty, zstd compression, extended L2 entries.
    let mut image = qcow2(GIB);
    put_be64(&mut image, 72, 1 | 1 << 3);
    assert!(check(&image, GIB).is_ok());
}

#[test]
fn a_qcow2_larger_than_the_disk_is_refused_from_its_header() {
    let image = qcow2(4 * GIB);
    refused(
        &image,
        GIB,
        "virtual size (4096 MiB) is larger than the disk (1024 MiB)",
    );
    assert!(check_head(&image[..512], GIB).is_err());
    assert!(check(&image, 4 * GIB).is_ok());
}

#[test]
fn a_qcow2_whose_tables_point_outside_the_file_is_refused() {
    let mut image = qcow2(GIB);
    put_be64(&mut image, 3 * C, (100 * C) as u64);
    refused(&image, GIB, "L2 table");
    let mut image = qcow2(GIB);
    put_be64(&mut image, 4 * C, (100 * C) as u64);
    refused(&image, GIB, "data cluster");
    let mut image = qcow2(GIB);
    put_be64(&mut image, 4 * C, 1 << 62 | (100 * C) as u64);
    refused(&image, GIB, "compressed cluster");
    let mut image = qcow2(GIB);
    put_be64(&mut image, 40, (200 * C) as u64);
    refused(&image, GIB, "L1 table");
    let mut image = qcow2(GIB);
    put_be64(&mut image, 48, (200 * C) as u64);
    refused(&image, GIB, "refcount table");
    // An L1 table too small for the virtual size.
    let mut image = qcow2(GIB);
    put_be32(&mut image, 36, 1);
    refused(&image, GIB, "cannot map its virtual size");
    // Cut short.
    let image = qcow2(GIB);
    refused(&image[..4 * C], GIB, "L2 table");
    refused(&image[..50], GIB, "ends inside its qcow2 header");
}

#[test]
fn a_file_two_formats_claim_is_refused() {
    let mut image = qcow2(GIB);
    image[ISO_MAGIC_AT..ISO_MAGIC_AT + 5].copy_from_slice(b"CD001");
    refused(&image, GIB, "both a qcow2 image and an ISO 9660 image");
    let mut image = qcow2(GIB);
    image.extend(vhd_footer_bytes(1 << 20, 2));
    refused(&image, GIB, "both a qcow2 image and a VHD");
}

/// A VHD footer for `size` bytes of disk type `kind` (2 fixed, 3 dynamic, 4 differencing).
fn vhd_footer_bytes(size: u64, kind: u32) -> Vec<u8> {
    let mut f = vec![0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    put_be32(&mut f, 8, 2);
    put_be32(&mut f, 12, 0x0001_0000);
    put_be64(&mut f, 16, if kind == 2 { u64::MAX } else { 512 });
    f[28..32].copy_from_slice(b"qem2");
    put_be64(&mut f, 40, size);
    put_be64(&mut f, 48, size);
    put_be32(&mut f, 60, kind);
    let sum = !ones_complement(&f);
    put_be32(&mut f, 64, sum);
    f
}

#[test]
fn a_fixed_vhd_is_its_data_and_a_footer_whose_checksum_is_right() {
    let mut image = vec![5u8; 1 << 20];
    image.extend(vhd_footer_bytes(1 << 20, 2));
    let found = check(&image, GIB).unwrap();
    assert_eq!(found.format, ImageFormat::Vhd);
    assert!(found.fixed_vhd);
    assert_eq!(found.virtual_size, 1 << 20);
    let last = image.len() - 100;
    image[last] ^= 1;
    refused(&image, GIB, "footer's checksum is wrong");
    let mut image = vec![5u8; 1 << 20];
    image.extend(vhd_footer_bytes(2 << 20, 2));
    refused(
        &image,
        GIB,
        "says 2097152 bytes of data, the file holds 1048576",
    );
    let mut image = vec![5u8; 2 << 20];
    image.extend(vhd_footer_bytes(2 << 20, 2));
    refused(&image, 1 << 20, "larger than the disk");
}

#[test]
fn a_differencing_vhd_is_refused() {
    let mut image = vhd_footer_bytes(1 << 20, 4);
    image.resize(4096, 0);
    image.extend(vhd_footer_bytes(1 << 20, 4));
    refused(&image, GIB, "differencing VHD");
    assert!(check_head(&image[..512], GIB).is_err());
}

/// A monolithic sparse VMDK of 1 MiB (64 KiB grains) whose descriptor is `descriptor`, with
/// one grain of data.
fn vmdk(descriptor: &str) -> Vec<u8> {
    let mut f = vec![0u8; (8 + 128) * 512];
    f[..4].copy_from_slice(b"KDMV");
    put_le32(&mut f, 4, 1);
    put_le32(&mut f, 8, 3);
    put_le64(&mut f, 12, 2048);
    put_le64(&mut f, 20, 128);
    put_le64(&mut f, 28, 1);
    put_le64(&mut f, 36, 2);
    put_le32(&mut f, 44, 512);
    put_le64(&mut f, 56, 3);
    put_le64(&mut f, 64, 8);
    f[512..512 + descriptor.len()].copy_from_slice(descriptor.as_bytes());
    put_le32(&mut f, 3 * 512, 4);
    put_le32(&mut f, 4 * 512, 8);
    f[8 * 512..].fill(0xcd);
    f
}

fn descriptor(create_type: &str, extents: &str, extra: &str) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n{extra}\
         createType=\"{create_type}\"\n\n# Extent description\n{extents}\n"
    )
}

const OWN_EXTENT: &str = "RW 2048 SPARSE \"disk.vmdk\"";

#[test]
fn a_monolithic_sparse_vmdk_is_accepted() {
    let image = vmdk(&descriptor("monolithicSparse", OWN_EXTENT, ""));
    let found = check(&image, GIB).unwrap();
    assert_eq!(found.format, ImageFormat::Vmdk);
    assert_eq!((found.virtual_size, found.data_bound), (1 << 20, 64 << 10));
}

#[test]
fn a_vmdk_naming_other_files_is_refused() {
    let two = format!("{OWN_EXTENT}\nRW 2048 FLAT \"/etc/shadow\" 0");
    refused(
        &vmdk(&descriptor("monolithicSparse", &two, "")),
        GIB,
        "names 2 extents",
    );
    refused(
        &vmdk(&descriptor(
            "monolithicSparse",
            "RW 2048 SPARSE \"../other.vmdk\"",
            "",
        )),
        GIB,
        "names another file",
    );
    refused(
        &vmdk(&descriptor(
            "monolithicSparse",
            "RW 2048 FLAT \"disk-flat.vmdk\" 0",
            "",
        )),
        GIB,
        "not the file's own sparse extent",
    );
    refused(
        &vmdk(&descriptor("twoGbMaxExtentSparse", OWN_EXTENT, "")),
        GIB,
        "only monolithicSparse and streamOptimized",
    );
    refused(
        &vmdk(&descriptor(
            "monolithicSparse",
            OWN_EXTENT,
            "parentFileNameHint=\"/var/lib/other.vmdk\"\n",
        )),
        GIB,
        "names a parent file",
    );
    let text = descriptor("monolithicFlat", "RW 2048 FLAT \"/etc/passwd\" 0", "");
    refused(text.as_bytes(), GIB, "VMDK descriptor");
    refused(
        &vmdk(&descriptor(
            "monolithicSparse",
            "RW 4096 SPARSE \"disk.vmdk\"",
            "",
        )),
        GIB,
        "says 4096 sectors, its header 2048",
    );
}

#[test]
fn a_vmdk_whose_tables_point_outside_the_file_is_refused() {
    let mut image = vmdk(&descriptor("monolithicSparse", OWN_EXTENT, ""));
    put_le32(&mut image, 4 * 512, 4000);
    refused(&image, GIB, "grain (at sector 4000)");
    let mut image = vmdk(&descriptor("monolithicSparse", OWN_EXTENT, ""));
    put_le32(&mut image, 3 * 512, 4000);
    refused(&image, GIB, "grain table");
    let image = vmdk(&descriptor("monolithicSparse", OWN_EXTENT, ""));
    refused(&image, 512 << 10, "larger than the disk");
}

/// Runs qemu-img (scripts/test.sh installs qemu-utils).
fn qemu_img(args: &[&str]) {
    let out = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("running qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn what_qemu_img_makes_is_recognised_and_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let mut raw = vec![0u8; 5 << 20];
    for (i, block) in raw.chunks_mut(4096).enumerate().filter(|(i, _)| i % 7 == 0) {
        block.fill(i as u8 | 1);
    }
    std::fs::write(path("disk.raw"), &raw).unwrap();
    let cases: &[(&str, &[&str], ImageFormat)] = &[
        ("a.qcow2", &["-O", "qcow2"], ImageFormat::Qcow2),
        ("c.qcow2", &["-O", "qcow2", "-c"], ImageFormat::Qcow2),
        (
            "v2.qcow2",
            &["-O", "qcow2", "-o", "compat=0.10"],
            ImageFormat::Qcow2,
        ),
        ("a.vmdk", &["-O", "vmdk"], ImageFormat::Vmdk),
        (
            "s.vmdk",
            &["-O", "vmdk", "-o", "subformat=streamOptimized"],
            ImageFormat::Vmdk,
        ),
        ("d.vhd", &["-O", "vpc"], ImageFormat::Vhd),
        (
            "f.vhd",
            &["-O", "vpc", "-o", "subformat=fixed"],
            ImageFormat::Vhd,
        ),
        ("a.vhdx", &["-O", "vhdx"], ImageFormat::Vhdx),
    ];
    for (name, options, format) in cases {
        let mut args = vec!["convert", "-f", "raw"];
        args.extend_from_slice(options);
        let (src, dest) = (path("disk.raw"), path(name));
        args.extend([src.as_str(), dest.as_str()]);
        qemu_img(&args);
        let bytes = std::fs::read(&dest).unwrap();
        let found = check(&bytes, GIB).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(found.format, *format, "{name}");
        assert!(found.virtual_size >= raw.len() as u64, "{name}: {found:?}");
        assert!(
            found.virtual_size < raw.len() as u64 + (1 << 20),
            "{name}: {found:?}"
        );
        assert!(
            check_head(&bytes[..bytes.len().min(1 << 20)], GIB).is_ok(),
            "{name}"
        );
        refused(&bytes, 4 << 20, "larger than the disk");
    }
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        &path("b.qcow2"),
    ]);
    refused(&std::fs::read(path("b.qcow2")).unwrap(), GIB, "/etc/passwd");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", path("x.raw")),
        &path("x.qcow2"),
        "1M",
    ]);
    refused(
        &std::fs::read(path("x.qcow2")).unwrap(),
        GIB,
        "external data file",
    );
}
