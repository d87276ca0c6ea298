//! The libav* libraries this process runs with against the headers it was compiled with. A
//! container whose runtime libraries drifted from the build's (another Debian point release,
//! a different base image) can decode or encode differently, or crash on a changed struct, so
//! readiness fails on a difference in major or minor. The micro number is reported but not
//! fatal: FFmpeg keeps the ABI within a major.minor, release branches keep micro at 100, and
//! the container pins the exact Debian package versions anyway.

use std::fmt;

use ffmpeg_next::ffi;
use serde::Serialize;

/// One library's version: `major.minor.micro`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl Version {
    /// From libav's packed `AV_VERSION_INT` (major << 16 | minor << 8 | micro).
    pub fn from_packed(v: u32) -> Self {
        Self {
            major: v >> 16,
            minor: (v >> 8) & 0xff,
            micro: v & 0xff,
        }
    }

    fn compiled(major: i32, minor: i32, micro: i32) -> Self {
        Self {
            major: major as u32,
            minor: minor as u32,
            micro: micro as u32,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.to_string()
    }
}

/// A library as linked at run time and as its headers said at build time.
#[derive(Clone, Debug, Serialize)]
pub struct Library {
    pub name: &'static str,
    pub runtime: Version,
    pub compiled: Version,
}

impl Library {
    /// Why this library cannot be trusted, if it cannot: a major or minor difference.
    pub fn mismatch(&self) -> Option<String> {
        let (r, c) = (self.runtime, self.compiled);
        ((r.major, r.minor) != (c.major, c.minor)).then(|| {
            format!(
                "lib{} {} at run time, built against {}",
                self.name, self.runtime, self.compiled
            )
        })
    }
}

/// Every libav* library the service uses.
pub fn libraries() -> Vec<Library> {
    // SAFETY: the `*_version()` functions only return a constant.
    let runtime = unsafe {
        [
            ffi::avutil_version(),
            ffi::avcodec_version(),
            ffi::avformat_version(),
            ffi::avfilter_version(),
            ffi::swscale_version(),
            ffi::swresample_version(),
        ]
    };
    let compiled = [
        (
            "avutil",
            Version::compiled(
                ffi::LIBAVUTIL_VERSION_MAJOR,
                ffi::LIBAVUTIL_VERSION_MINOR,
                ffi::LIBAVUTIL_VERSION_MICRO,
            ),
        ),
        (
            "avcodec",
            Version::compiled(
                ffi::LIBAVCODEC_VERSION_MAJOR,
                ffi::LIBAVCODEC_VERSION_MINOR,
                ffi::LIBAVCODEC_VERSION_MICRO,
            ),
        ),
        (
            "avformat",
            Version::compiled(
                ffi::LIBAVFORMAT_VERSION_MAJOR,
                ffi::LIBAVFORMAT_VERSION_MINOR,
                ffi::LIBAVFORMAT_VERSION_MICRO,
            ),
        ),
        (
            "avfilter",
            Version::compiled(
                ffi::LIBAVFILTER_VERSION_MAJOR,
                ffi::LIBAVFILTER_VERSION_MINOR,
                ffi::LIBAVFILTER_VERSION_MICRO,
            ),
        ),
        (
            "swscale",
            Version::compiled(
                ffi::LIBSWSCALE_VERSION_MAJOR,
                ffi::LIBSWSCALE_VERSION_MINOR,
                ffi::LIBSWSCALE_VERSION_MICRO,
            ),
        ),
        (
            "swresample",
            Version::compiled(
                ffi::LIBSWRESAMPLE_VERSION_MAJOR,
                ffi::LIBSWRESAMPLE_VERSION_MINOR,
                ffi::LIBSWRESAMPLE_VERSION_MICRO,
            ),
        ),
    ];
    compiled
        .into_iter()
        .zip(runtime)
        .map(|((name, compiled), runtime)| Library {
            name,
            runtime: Version::from_packed(runtime),
            compiled,
        })
        .collect()
}

/// `Ok` when every library matches its build in major.minor, else every difference.
pub fn check(libraries: &[Library]) -> Result<(), String> {
    let mismatches: Vec<String> = libraries.iter().filter_map(Library::mismatch).collect();
    match mismatches.is_empty() {
        true => Ok(()),
        false => Err(mismatches.join("; ")),
    }
}

/// `avcodec 59.37.100, avformat …` for the start-up log.
pub fn summary(libraries: &[Library]) -> String {
    libraries
        .iter()
        .map(|l| match l.runtime == l.compiled {
            true => format!("{} {}", l.name, l.runtime),
            false => format!("{} {} (built against {})", l.name, l.runtime, l.compiled),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn library(runtime: (u32, u32, u32), compiled: (u32, u32, u32)) -> Library {
        let v = |(major, minor, micro)| Version {
            major,
            minor,
            micro,
        };
        Library {
            name: "avcodec",
            runtime: v(runtime),
            compiled: v(compiled),
        }
    }

    #[test]
    fn packed_versions_unpack() {
        let v = Version::from_packed((59 << 16) | (37 << 8) | 100);
        assert_eq!(v.to_string(), "59.37.100");
    }

    #[test]
    fn major_or_minor_differences_are_fatal_and_micro_ones_are_not() {
        let same = library((59, 37, 100), (59, 37, 100));
        let micro = library((59, 37, 101), (59, 37, 100));
        let minor = library((59, 38, 100), (59, 37, 100));
        let major = library((60, 3, 100), (59, 37, 100));
        assert!(check(&[same.clone(), micro.clone()]).is_ok());
        let error = check(&[same, minor, major]).unwrap_err();
        assert_eq!(
            error,
            "libavcodec 59.38.100 at run time, built against 59.37.100; \
             libavcodec 60.3.100 at run time, built against 59.37.100"
        );
        assert!(summary(&[micro]).contains("59.37.101 (built against 59.37.100)"));
    }

    #[test]
    fn the_libraries_this_test_runs_with_match_their_build() {
        let libraries = libraries();
        assert_eq!(libraries.len(), 6);
        assert!(check(&libraries).is_ok(), "{}", summary(&libraries));
        assert!(libraries.iter().all(|l| l.runtime.major > 0));
    }
}
