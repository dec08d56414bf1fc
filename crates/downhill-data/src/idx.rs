//! MNIST-format IDX files (gzipped or not) and Fashion-MNIST.
//!
//! An IDX file is a 4-byte magic number (`0x00 0x00 <dtype> <ndims>`), `ndims`
//! big-endian u32 dimensions, then the values in row-major order. Only dtype
//! `0x08` (unsigned byte), the one MNIST-style datasets use, is supported.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::{DataError, Dataset, Split};

/// The most data bytes an IDX file may claim (1 GiB); larger claims are
/// refused from the header alone, before anything is allocated.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Where Debian's `dataset-fashion-mnist` package installs the four gzipped
/// IDX files.
pub const FASHION_MNIST_DEFAULT_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The IDX dtype code for unsigned bytes.
const DTYPE_U8: u8 = 0x08;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A decoded IDX file: its dimensions and its bytes.
struct Idx {
    dims: Vec<usize>,
    data: Vec<u8>,
}

fn malformed(file: &Path, reason: impl Into<String>) -> DataError {
    DataError::Malformed {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_error(file: &Path, e: &io::Error) -> DataError {
    DataError::Io {
        file: file.to_path_buf(),
        message: e.to_string(),
    }
}

/// Map an error met while reading file contents: a short read or a corrupt
/// gzip stream is bad data; anything else is an I/O failure.
fn read_error(file: &Path, e: &io::Error, what: &str) -> DataError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => malformed(file, format!("truncated {what}")),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            malformed(file, format!("corrupt gzip data in the {what}: {e}"))
        }
        _ => io_error(file, e),
    }
}

fn dtype_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "not an IDX type",
    }
}

/// Read one IDX file, detecting gzip by its magic bytes. The size the header
/// claims is checked against [`MAX_IDX_BYTES`] and (for plain files) the file's
/// length before any data is read; for gzipped files at most one byte beyond
/// the claim is decompressed.
fn read_idx(path: &Path) -> Result<Idx, DataError> {
    let mut file = File::open(path).map_err(|e| io_error(path, &e))?;
    let file_len = file.metadata().map_err(|e| io_error(path, &e))?.len();
    let mut first = [0u8; 2];
    let gzipped = file_len >= 2 && {
        file.read_exact(&mut first)
            .map_err(|e| io_error(path, &e))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_error(path, &e))?;
        first == GZIP_MAGIC
    };
    let mut reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };

    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .map_err(|e| read_error(path, &e, "header"))?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(malformed(
            path,
            format!(
                "bad magic number {:02x} {:02x} {:02x} {:02x}: an IDX file starts with 00 00",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    let (dtype, ndims) = (magic[2], usize::from(magic[3]));
    if dtype != DTYPE_U8 {
        return Err(malformed(
            path,
            format!(
                "dtype code 0x{dtype:02x} ({}) is not supported; only 0x08 (unsigned byte)",
                dtype_name(dtype)
            ),
        ));
    }
    if ndims == 0 {
        return Err(malformed(path, "the header declares 0 dimensions"));
    }
    let mut raw = vec![0u8; 4 * ndims];
    reader
        .read_exact(&mut raw)
        .map_err(|e| read_error(path, &e, "header"))?;
    let dims: Vec<u64> = raw
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let shown = dims
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" × ");
    let claim = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| malformed(path, format!("dimensions {shown} overflow a 64-bit size")))?;
    if claim > MAX_IDX_BYTES {
        return Err(malformed(
            path,
            format!(
                "dimensions {shown} claim {claim} bytes of data, over the limit of {MAX_IDX_BYTES}"
            ),
        ));
    }
    if !gzipped {
        let available = file_len - (4 + 4 * ndims as u64);
        if available < claim {
            return Err(malformed(
                path,
                format!(
                    "truncated data: dimensions {shown} need {claim} bytes, the file holds {available}"
                ),
            ));
        }
        if available > claim {
            return Err(malformed(
                path,
                format!(
                    "trailing garbage: dimensions {shown} need {claim} bytes, the file holds {available}"
                ),
            ));
        }
    }
    // For gzip the claim may be a lie, so let the buffer grow with the data
    // actually decompressed rather than reserving the claim up front.
    let reserve = if gzipped { claim.min(1 << 24) } else { claim };
    let mut data = Vec::with_capacity(reserve as usize);
    reader
        .take(claim + 1)
        .read_to_end(&mut data)
        .map_err(|e| read_error(path, &e, "data"))?;
    let got = data.len() as u64;
    if got < claim {
        return Err(malformed(
            path,
            format!("truncated data: dimensions {shown} need {claim} bytes, only {got} present"),
        ));
    }
    if got > claim {
        return Err(malformed(
            path,
            format!("trailing garbage after the {claim} data bytes that dimensions {shown} need"),
        ));
    }
    let dims = dims
        .into_iter()
        .map(usize::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| malformed(path, format!("dimensions {shown} do not fit this platform")))?;
    Ok(Idx { dims, data })
}

/// Read an MNIST-format IDX image file and label file (each gzipped or not,
/// detected by the gzip magic bytes `1f 8b`, not by the name) into a
/// [`Dataset`] with pixels as f32 in [0, 1] (byte / 255).
///
/// The image file must have at least two dimensions (count, then the
/// per-image shape, which becomes [`Dataset::shape`]); the label file exactly
/// one, equal to the image count. `classes` is `class_names.len()`, and every
/// label must be below it; if `class_names` is empty, the classes are
/// `0..=max label`, named by their numbers.
///
/// Errors: [`DataError::Io`] if a file cannot be opened or read;
/// [`DataError::Malformed`], naming the file, for a bad magic number, a dtype
/// other than unsigned byte, a wrong dimension count, a size over
/// [`MAX_IDX_BYTES`], truncated data or trailing garbage, corrupt gzip data,
/// a label count that differs from the image count, or a label ≥ classes.
pub fn load_idx(
    name: &str,
    images: &Path,
    labels: &Path,
    class_names: Vec<String>,
) -> Result<Dataset, DataError> {
    let img = read_idx(images)?;
    if img.dims.len() < 2 {
        return Err(malformed(
            images,
            format!(
                "an image file needs at least 2 dimensions (count, then per-image shape), this one has {}",
                img.dims.len()
            ),
        ));
    }
    let n = img.dims[0];
    let shape = img.dims[1..].to_vec();
    let features: usize = shape.iter().product();
    if features == 0 {
        return Err(malformed(
            images,
            format!("per-image shape {shape:?} is empty"),
        ));
    }
    let lab = read_idx(labels)?;
    if lab.dims.len() != 1 {
        return Err(malformed(
            labels,
            format!(
                "a label file needs exactly 1 dimension, this one has {}",
                lab.dims.len()
            ),
        ));
    }
    if lab.dims[0] != n {
        return Err(malformed(
            labels,
            format!(
                "{} labels for {n} images (in {})",
                lab.dims[0],
                images.display()
            ),
        ));
    }
    let (classes, class_names) = if class_names.is_empty() {
        let classes = lab.data.iter().max().map_or(0, |&m| usize::from(m) + 1);
        (classes, (0..classes).map(|c| c.to_string()).collect())
    } else {
        (class_names.len(), class_names)
    };
    if let Some((i, &l)) = lab
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= classes)
    {
        return Err(malformed(
            labels,
            format!("label {l} at index {i} is not below the class count {classes}"),
        ));
    }
    Ok(Dataset {
        name: name.to_string(),
        features,
        classes,
        x: img.data.iter().map(|&b| f32::from(b) / 255.0).collect(),
        y: lab.data.iter().map(|&l| u32::from(l)).collect(),
        class_names,
        shape,
    })
}

/// How to get Fashion-MNIST, for [`DataError::Missing`].
fn fashion_mnist_hint(what: &str) -> String {
    format!(
        "{what}; install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, \
         files go to {FASHION_MNIST_DEFAULT_DIR}), or pass `--data-dir DIR` where DIR holds \
         train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), \
         t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) \
         from https://github.com/zalandoresearch/fashion-mnist"
    )
}

/// `dir/stem` if it is a file, else `dir/stem.gz`, else `Missing`.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for candidate in [stem.to_string(), format!("{stem}.gz")] {
        let path = dir.join(candidate);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(DataError::Missing {
        dataset: "fashion-mnist".into(),
        looked_in: dir.to_path_buf(),
        hint: fashion_mnist_hint(&format!("neither {stem} nor {stem}.gz is there")),
    })
}

/// Fashion-MNIST from `dir` (default: [`FASHION_MNIST_DEFAULT_DIR`], where
/// Debian's `dataset-fashion-mnist` package puts it), as a [`Split`] of its
/// 60 000 training and 10 000 test images (28 × 28, pixels in [0, 1]) with its
/// 10 class names ([`FASHION_MNIST_CLASSES`]).
///
/// Each of `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` is looked for under
/// its plain name first, then with `.gz`. A missing directory or file gives
/// [`DataError::Missing`] with instructions; bad files give the errors of
/// [`load_idx`].
pub fn fashion_mnist(dir: Option<&Path>) -> Result<Split, DataError> {
    let dir = dir.unwrap_or(Path::new(FASHION_MNIST_DEFAULT_DIR));
    if !dir.is_dir() {
        return Err(DataError::Missing {
            dataset: "fashion-mnist".into(),
            looked_in: dir.to_path_buf(),
            hint: fashion_mnist_hint("the directory does not exist"),
        });
    }
    let paths = [
        find_file(dir, "train-images-idx3-ubyte")?,
        find_file(dir, "train-labels-idx1-ubyte")?,
        find_file(dir, "t10k-images-idx3-ubyte")?,
        find_file(dir, "t10k-labels-idx1-ubyte")?,
    ];
    let names = || {
        FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let train = load_idx("fashion-mnist", &paths[0], &paths[1], names())?;
    let test = load_idx("fashion-mnist", &paths[2], &paths[3], names())?;
    if test.shape != train.shape {
        return Err(malformed(
            &paths[2],
            format!(
                "test images are {:?}, training images {:?}",
                test.shape, train.shape
            ),
        ));
    }
    Ok(Split { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    /// A scratch directory under the system temp dir, named by the process id
    /// and the test, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("downhill-data-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create scratch dir");
            Scratch(dir)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).expect("write scratch file");
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn idx(dtype: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, dtype, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).expect("compress");
        enc.finish().expect("compress")
    }

    fn digit_names() -> Vec<String> {
        (0..10).map(|c| c.to_string()).collect()
    }

    /// 5 images of 3 × 4 bytes covering 0 and 255, with labels 0..5.
    fn sample() -> (Vec<u8>, Vec<u8>) {
        let mut pixels: Vec<u8> = (0..60u32).map(|i| (i * 53 % 256) as u8).collect();
        pixels[7] = 255;
        (pixels, vec![3, 0, 9, 4, 1])
    }

    fn assert_malformed(result: Result<Dataset, DataError>, file: &Path, needle: &str) {
        match result {
            Err(DataError::Malformed { file: f, reason }) => {
                assert_eq!(f, file, "wrong file named; reason: {reason}");
                assert!(
                    reason.contains(needle),
                    "reason {reason:?} should mention {needle:?}"
                );
            }
            other => panic!(
                "expected Malformed naming {}, got {other:?}",
                file.display()
            ),
        }
    }

    #[test]
    fn round_trip_plain_and_gzipped() {
        let s = Scratch::new("round-trip");
        let (pixels, labels) = sample();
        assert!(pixels.contains(&255) && pixels.contains(&0));
        let img = idx(8, &[5, 3, 4], &pixels);
        let lab = idx(8, &[5], &labels);
        let variants = [
            (s.write("a-img", &img), s.write("a-lab", &lab)),
            (
                s.write("b-img.gz", &gz(&img)),
                s.write("b-lab.gz", &gz(&lab)),
            ),
            // Detection is by content: a gzipped file without .gz, a plain one with it.
            (s.write("c-img", &gz(&img)), s.write("c-lab.gz", &lab)),
        ];
        for (i, l) in &variants {
            let d = load_idx("toy", i, l, digit_names()).expect("load");
            assert_eq!(d.name, "toy");
            assert_eq!(d.len(), 5);
            assert_eq!(d.features, 12);
            assert_eq!(d.shape, vec![3, 4]);
            assert_eq!(d.classes, 10);
            assert_eq!(d.class_names, digit_names());
            assert_eq!(d.y, vec![3, 0, 9, 4, 1]);
            let expect: Vec<f32> = pixels.iter().map(|&b| f32::from(b) / 255.0).collect();
            assert_eq!(d.x, expect);
            assert!(d.x.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn empty_class_names_are_inferred() {
        let s = Scratch::new("infer");
        let (pixels, labels) = sample();
        let i = s.write("img", &idx(8, &[5, 12], &pixels));
        let l = s.write("lab", &idx(8, &[5], &labels));
        let d = load_idx("toy", &i, &l, Vec::new()).expect("load");
        assert_eq!(d.classes, 10);
        assert_eq!(d.class_names, digit_names());
        assert_eq!(d.shape, vec![12]);
    }

    #[test]
    fn malformed_files_are_named() {
        let s = Scratch::new("malformed");
        let (pixels, labels) = sample();
        let good_img = s.write("good-img", &idx(8, &[5, 3, 4], &pixels));
        let good_lab = s.write("good-lab", &idx(8, &[5], &labels));
        let names = digit_names;

        let mut bad_magic = idx(8, &[5, 3, 4], &pixels);
        bad_magic[0] = 0x12;
        let mut truncated = idx(8, &[5, 3, 4], &pixels);
        truncated.pop();
        let mut trailing = idx(8, &[5, 3, 4], &pixels);
        trailing.push(7);
        let image_cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", vec![], "truncated header"),
            ("short-header", vec![0, 0, 8], "truncated header"),
            (
                "short-dims",
                vec![0, 0, 8, 3, 0, 0, 0, 5, 0],
                "truncated header",
            ),
            ("magic", bad_magic, "bad magic"),
            ("dtype", idx(0x0D, &[5, 3, 4], &pixels), "dtype code 0x0d"),
            ("ndims0", idx(8, &[], &[]), "0 dimensions"),
            ("ndims1", idx(8, &[60], &pixels), "at least 2 dimensions"),
            ("zero-shape", idx(8, &[5, 0, 4], &[]), "empty"),
            ("truncated", truncated, "truncated data"),
            ("trailing", trailing, "trailing garbage"),
        ];
        for (tag, bytes, needle) in image_cases {
            for gzipped in [false, true] {
                let bytes = if gzipped { gz(&bytes) } else { bytes.clone() };
                let path = s.write(&format!("img-{tag}-{gzipped}"), &bytes);
                assert_malformed(load_idx("t", &path, &good_lab, names()), &path, needle);
            }
        }

        let label_cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("count", idx(8, &[4], &labels[..4]), "4 labels for 5 images"),
            ("ndims", idx(8, &[5, 1], &labels), "exactly 1 dimension"),
            (
                "range",
                idx(8, &[5], &[3, 0, 10, 4, 1]),
                "label 10 at index 2",
            ),
            ("dtype", idx(0x0C, &[5], &labels), "dtype code 0x0c"),
        ];
        for (tag, bytes, needle) in label_cases {
            for gzipped in [false, true] {
                let bytes = if gzipped { gz(&bytes) } else { bytes.clone() };
                let path = s.write(&format!("lab-{tag}-{gzipped}"), &bytes);
                assert_malformed(load_idx("t", &good_img, &path, names()), &path, needle);
            }
        }

        // Two classes only: label 9 is out of range.
        let two = vec!["no".to_string(), "yes".to_string()];
        assert_malformed(
            load_idx("t", &good_img, &good_lab, two),
            &good_lab,
            "label 3 at index 0",
        );

        // Corrupt gzip: right magic, garbage after; and a gzip stream cut short.
        let corrupt = s.write(
            "corrupt",
            &[0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        );
        assert!(matches!(
            load_idx("t", &corrupt, &good_lab, names()),
            Err(DataError::Malformed { file, .. }) if file == corrupt
        ));
        let full = gz(&idx(8, &[5, 3, 4], &pixels));
        let cut = s.write("cut.gz", &full[..full.len() - 10]);
        assert!(matches!(
            load_idx("t", &cut, &good_lab, names()),
            Err(DataError::Malformed { file, .. }) if file == cut
        ));
        // Garbage after a complete gzip member.
        let mut junk = full.clone();
        junk.extend_from_slice(b"junk after the stream");
        let junk = s.write("junk.gz", &junk);
        assert!(matches!(
            load_idx("t", &junk, &good_lab, names()),
            Err(DataError::Malformed { file, .. }) if file == junk
        ));
    }

    #[test]
    fn huge_claims_are_refused_before_allocating() {
        let s = Scratch::new("huge");
        let (_, labels) = sample();
        let lab = s.write("lab", &idx(8, &[5], &labels));
        let cases: [(&str, Vec<u32>, &str); 4] = [
            // 2^24 images of 256 × 256 = 2^40 bytes (a u32 count cannot say 2^40 itself).
            ("2p40-bytes", vec![1 << 24, 256, 256], "over the limit"),
            ("max-count", vec![u32::MAX, 28, 28], "over the limit"),
            ("overflow", vec![u32::MAX; 4], "overflow"),
            // Under the limit but far beyond the data present (512 MiB claimed).
            ("lying", vec![1 << 19, 32, 32], "truncated data"),
        ];
        for (tag, dims, needle) in cases {
            let header = idx(8, &dims, &[1, 2, 3]);
            for gzipped in [false, true] {
                let bytes = if gzipped { gz(&header) } else { header.clone() };
                let path = s.write(&format!("{tag}-{gzipped}"), &bytes);
                let start = Instant::now();
                let result = load_idx("t", &path, &lab, digit_names());
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "{tag} took too long"
                );
                assert_malformed(result, &path, needle);
            }
        }
    }

    #[test]
    fn unreadable_file_is_io() {
        let s = Scratch::new("io");
        let missing = s.0.join("nope");
        let err = load_idx("t", &missing, &missing, Vec::new()).expect_err("missing file");
        assert!(
            matches!(&err, DataError::Io { file, .. } if *file == missing),
            "{err:?}"
        );
    }

    #[test]
    fn missing_fashion_mnist_says_how_to_get_it() {
        let s = Scratch::new("missing");
        let absent = s.0.join("no-such-dir");
        let err = fashion_mnist(Some(&absent)).expect_err("missing dir");
        assert!(matches!(&err, DataError::Missing { looked_in, .. } if *looked_in == absent));
        let msg = err.to_string();
        assert!(
            msg.contains("apt-get install dataset-fashion-mnist"),
            "{msg}"
        );
        assert!(msg.contains("--data-dir"), "{msg}");

        // A directory with only some of the files names the first one missing.
        s.write("train-images-idx3-ubyte.gz", &gz(&idx(8, &[1, 1, 1], &[0])));
        let err = fashion_mnist(Some(&s.0)).expect_err("missing labels");
        let msg = err.to_string();
        assert!(matches!(err, DataError::Missing { .. }));
        assert!(msg.contains("train-labels-idx1-ubyte"), "{msg}");
        assert!(
            msg.contains("apt-get install dataset-fashion-mnist"),
            "{msg}"
        );
    }

    #[test]
    fn fashion_mnist_layout_from_a_data_dir() {
        let s = Scratch::new("layout");
        let (pixels, labels) = sample();
        // Mix of plain and gzipped names, as --data-dir allows.
        s.write(
            "train-images-idx3-ubyte.gz",
            &gz(&idx(8, &[5, 3, 4], &pixels)),
        );
        s.write("train-labels-idx1-ubyte", &idx(8, &[5], &labels));
        s.write("t10k-images-idx3-ubyte", &idx(8, &[2, 3, 4], &pixels[..24]));
        s.write("t10k-labels-idx1-ubyte.gz", &gz(&idx(8, &[2], &[8, 9])));
        let split = fashion_mnist(Some(&s.0)).expect("load");
        assert_eq!((split.train.len(), split.test.len()), (5, 2));
        assert_eq!(split.test.y, vec![8, 9]);
        assert_eq!(split.train.class_names[9], "Ankle boot");
        assert_eq!(split.train.classes, 10);

        // Test images of another shape are refused.
        s.write("t10k-images-idx3-ubyte", &idx(8, &[2, 4, 3], &pixels[..24]));
        let err = fashion_mnist(Some(&s.0)).expect_err("shape mismatch");
        assert!(matches!(err, DataError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn real_fashion_mnist_if_installed() {
        let dir = Path::new(FASHION_MNIST_DEFAULT_DIR);
        if !dir.join("train-images-idx3-ubyte.gz").is_file()
            && !dir.join("train-images-idx3-ubyte").is_file()
        {
            eprintln!(
                "skipping real_fashion_mnist_if_installed: {} has no Fashion-MNIST \
                 (apt-get install dataset-fashion-mnist)",
                dir.display()
            );
            return;
        }
        let split = fashion_mnist(None).expect("load the installed Fashion-MNIST");
        for (part, n) in [(&split.train, 60_000), (&split.test, 10_000)] {
            assert_eq!(part.len(), n);
            assert_eq!(part.features, 784);
            assert_eq!(part.shape, vec![28, 28]);
            assert_eq!(part.classes, 10);
            assert_eq!(part.x.len(), n * 784);
            let mut counts = [0usize; 10];
            for &l in &part.y {
                counts[l as usize] += 1;
            }
            assert_eq!(counts, [n / 10; 10], "Fashion-MNIST is balanced");
            assert!(part.x.iter().all(|v| (0.0..=1.0).contains(v)));
            assert!(part.x.contains(&1.0) && part.x.contains(&0.0));
        }
        let mut split = split;
        let (mean, std) = split.standardize_global();
        // The usual Fashion-MNIST normalization constants.
        assert!((mean - 0.2860).abs() < 1e-3, "mean {mean}");
        assert!((std - 0.3530).abs() < 1e-3, "std {std}");
    }
}
