//! Reading and writing WAV files in the one format the proxy speaks
//! internally: 8000 Hz, mono, 16-bit signed integer PCM.
//!
//! Files in any other format are refused rather than converted: resampling
//! and downmixing need care (filters, dither) that a sox one-liner does
//! better, so the error says exactly which sox command fixes the file.

use std::fmt;
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavReader, WavSpec, WavWriter};
use thiserror::Error;

use super::codec::SAMPLE_RATE;

/// The only format `read_wav` accepts and `write_wav` produces.
const SPEC: WavSpec = WavSpec {
    channels: 1,
    sample_rate: SAMPLE_RATE,
    bits_per_sample: 16,
    sample_format: SampleFormat::Int,
};

/// The format found in a refused WAV file. Its `Display` lists only the
/// properties that differ from 8000 Hz mono 16-bit integer PCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Number of interleaved channels.
    pub channels: u16,
    /// Bits in one sample of one channel.
    pub bits_per_sample: u16,
    /// Whether samples are IEEE floats rather than signed integers.
    pub float: bool,
}

impl From<WavSpec> for WavFormat {
    fn from(spec: WavSpec) -> Self {
        WavFormat {
            sample_rate: spec.sample_rate,
            channels: spec.channels,
            bits_per_sample: spec.bits_per_sample,
            float: spec.sample_format == SampleFormat::Float,
        }
    }
}

impl fmt::Display for WavFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut problems = Vec::new();
        if self.sample_rate != SPEC.sample_rate {
            problems.push(format!("sample rate {} Hz", self.sample_rate));
        }
        if self.channels != SPEC.channels {
            problems.push(format!("{} channels", self.channels));
        }
        if self.float {
            problems.push(format!("{}-bit float samples", self.bits_per_sample));
        } else if self.bits_per_sample != SPEC.bits_per_sample {
            problems.push(format!("{}-bit samples", self.bits_per_sample));
        }
        f.write_str(&problems.join(", "))
    }
}

/// Why a WAV file could not be read or written.
#[derive(Debug, Error)]
pub enum WavError {
    /// The file could not be opened or parsed as WAV, or its data was cut short.
    #[error("{}: cannot read WAV: {source}", path.display())]
    Read {
        /// File being read.
        path: PathBuf,
        /// What hound reported.
        source: hound::Error,
    },
    /// The file is a valid WAV file, but not 8000 Hz mono 16-bit PCM.
    #[error(
        "{}: {found}, expected 8000 Hz mono 16-bit PCM \
         (convert with: sox {} -r 8000 -c 1 -b 16 -e signed-integer out.wav)",
        path.display(),
        path.display()
    )]
    WrongFormat {
        /// File being read.
        path: PathBuf,
        /// The format it has.
        found: WavFormat,
    },
    /// The file could not be created or written.
    #[error("{}: cannot write WAV: {source}", path.display())]
    Write {
        /// File being written.
        path: PathBuf,
        /// What hound reported.
        source: hound::Error,
    },
}

/// Reads all samples of an 8000 Hz mono 16-bit PCM WAV file; any other
/// format is refused with `WavError::WrongFormat`.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, WavError> {
    let read_err = |source| WavError::Read {
        path: path.to_owned(),
        source,
    };
    let reader = WavReader::open(path).map_err(read_err)?;
    let spec = reader.spec();
    if spec != SPEC {
        return Err(WavError::WrongFormat {
            path: path.to_owned(),
            found: spec.into(),
        });
    }
    reader
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .map_err(read_err)
}

/// Writes `samples` as an 8000 Hz mono 16-bit PCM WAV file, replacing any
/// file at `path`.
pub fn write_wav(path: &Path, samples: &[i16]) -> Result<(), WavError> {
    let write_err = |source| WavError::Write {
        path: path.to_owned(),
        source,
    };
    let mut writer = WavWriter::create(path, SPEC).map_err(write_err)?;
    for &s in samples {
        writer.write_sample(s).map_err(write_err)?;
    }
    // finalize() patches the header lengths; without it the file is invalid.
    writer.finalize().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes 100 frames in an arbitrary format with hound directly, to
    /// produce the files `read_wav` must refuse.
    fn write_with(path: &Path, spec: WavSpec) {
        let mut w = WavWriter::create(path, spec).unwrap();
        for i in 0..100 * u32::from(spec.channels) {
            match (spec.sample_format, spec.bits_per_sample) {
                (SampleFormat::Float, _) => w.write_sample(i as f32 / 100.0).unwrap(),
                (_, 8) => w.write_sample(i as i8).unwrap(),
                _ => w.write_sample(i as i16).unwrap(),
            }
        }
        w.finalize().unwrap();
    }

    /// Reads a file in `spec` and insists it is refused as `WrongFormat`
    /// naming the file; returns the path, the message and the format found.
    fn refusal(spec: WavSpec) -> (PathBuf, String, WavFormat) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.wav");
        write_with(&path, spec);
        let err = read_wav(&path).unwrap_err();
        let msg = err.to_string();
        match err {
            WavError::WrongFormat { path: p, found } => {
                assert_eq!(p, path);
                (path, msg, found)
            }
            other => panic!("expected WrongFormat, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_keeps_every_sample() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt.wav");
        let samples: Vec<i16> = (0..1000)
            .map(|i| (i * 7919 % 65536 - 32768) as i16)
            .collect();
        write_wav(&path, &samples).unwrap();
        assert_eq!(read_wav(&path).unwrap(), samples);
        assert_eq!(WavReader::open(&path).unwrap().spec(), SPEC);

        // Overwriting replaces the file, and an empty file is valid.
        write_wav(&path, &[]).unwrap();
        assert_eq!(read_wav(&path).unwrap(), Vec::<i16>::new());
    }

    #[test]
    fn other_sample_rate_is_refused_with_a_sox_hint() {
        let (path, msg, found) = refusal(WavSpec {
            sample_rate: 44100,
            ..SPEC
        });
        assert_eq!(found.sample_rate, 44100);
        let p = path.display();
        assert_eq!(
            msg,
            format!(
                "{p}: sample rate 44100 Hz, expected 8000 Hz mono 16-bit PCM \
                 (convert with: sox {p} -r 8000 -c 1 -b 16 -e signed-integer out.wav)"
            )
        );
    }

    #[test]
    fn stereo_is_refused() {
        let (_, msg, found) = refusal(WavSpec {
            channels: 2,
            ..SPEC
        });
        assert_eq!(found.channels, 2);
        assert!(msg.contains(": 2 channels, expected 8000 Hz mono"), "{msg}");
    }

    #[test]
    fn eight_bit_is_refused() {
        let (_, msg, found) = refusal(WavSpec {
            bits_per_sample: 8,
            ..SPEC
        });
        assert_eq!(found.bits_per_sample, 8);
        assert!(msg.contains(": 8-bit samples, expected"), "{msg}");
    }

    #[test]
    fn float_is_refused() {
        let (_, msg, found) = refusal(WavSpec {
            bits_per_sample: 32,
            sample_format: SampleFormat::Float,
            ..SPEC
        });
        assert!(found.float);
        assert!(msg.contains(": 32-bit float samples, expected"), "{msg}");
    }

    #[test]
    fn every_problem_is_listed() {
        let (_, msg, _) = refusal(WavSpec {
            sample_rate: 48000,
            channels: 2,
            bits_per_sample: 8,
            sample_format: SampleFormat::Int,
        });
        assert!(
            msg.contains(": sample rate 48000 Hz, 2 channels, 8-bit samples, expected"),
            "{msg}"
        );
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.wav");
        let err = read_wav(&missing).unwrap_err();
        assert!(matches!(err, WavError::Read { .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with(&format!("{}: cannot read WAV", missing.display())));

        let junk = dir.path().join("junk.wav");
        std::fs::write(&junk, b"this is not a RIFF file").unwrap();
        let err = read_wav(&junk).unwrap_err();
        assert!(
            matches!(&err, WavError::Read { path, .. } if path == &junk),
            "{err:?}"
        );

        // A file cut short in its data chunk fails rather than returning less.
        let cut = dir.path().join("cut.wav");
        write_wav(&cut, &[1000; 100]).unwrap();
        let bytes = std::fs::read(&cut).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() - 51]).unwrap();
        assert!(matches!(read_wav(&cut), Err(WavError::Read { .. })));
    }

    #[test]
    fn unwritable_path_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("out.wav");
        let err = write_wav(&path, &[1, 2, 3]).unwrap_err();
        assert!(
            matches!(&err, WavError::Write { path: p, .. } if p == &path),
            "{err:?}"
        );
        assert!(err.to_string().contains("cannot write WAV"));
    }
}
