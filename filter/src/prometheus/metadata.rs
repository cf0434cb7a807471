//! Tenant mode's metadata: a family's `# HELP`, `# TYPE` and `# UNIT` lines are
//! held until its first kept series and written just before it, or dropped with
//! the family when none of its series is kept. Blank lines and plain comments
//! after held metadata are held with it, so that they keep their place.
//!
//! It decides ([`Edit::Hold`] or [`Edit::Keep`]) and flags the release of what is
//! held; the bytes are copied by `State::apply`. It does not look at labels:
//! `series` tells it the name of each kept series.

use super::labelset::end_of_quoted;
use super::{Edit, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FamilyState {
    /// No metadata seen for the current family.
    None,
    /// `family`'s metadata is in `held_meta`, not yet written.
    Held,
    /// `family`'s metadata was written.
    Written,
}

impl State {
    /// A comment line whose `#` is at `at`.
    pub(super) fn comment(&mut self, line: &[u8], at: usize) -> Edit<'static> {
        if !self.filtering {
            return Edit::Keep;
        }
        let Some(family) = metadata_family(&line[at..]) else {
            // `# EOF` ends the body and is never held back.
            if line[at..].trim_ascii_end() == b"# EOF" {
                return Edit::Keep;
            }
            // Any other comment is free text, which may name anything: not the
            // tenant's to read.
            return Edit::Drop;
        };
        if self.family_state != FamilyState::None && family == self.family.as_slice() {
            // More metadata (`# TYPE` after `# HELP`) of the same family.
            return if self.family_state == FamilyState::Held {
                Edit::Hold
            } else {
                Edit::Keep
            };
        }
        self.held_meta.clear();
        self.family.clear();
        self.family.extend_from_slice(family);
        self.family_state = FamilyState::Held;
        Edit::Hold
    }

    /// A blank line or a plain comment. After held metadata it is held too, so
    /// that it keeps its place: written with the metadata before the family's
    /// first kept series, or dropped with it. (Written at once, it would come
    /// out before metadata that came before it.)
    pub(super) fn between_metadata_and_series(&self) -> Edit<'static> {
        if self.family_state == FamilyState::Held {
            Edit::Hold
        } else {
            Edit::Keep
        }
    }

    /// A series named `name` is kept while metadata is held: release the metadata
    /// before it if it is the series' family, else forget metadata that belonged
    /// to a family with no series.
    pub(super) fn family_kept(&mut self, name: &[u8]) {
        if belongs_to_family(name, &self.family) {
            self.family_state = FamilyState::Written;
            self.release_held = true;
        } else {
            self.held_meta.clear();
            self.family_state = FamilyState::None;
        }
    }
}

/// The family named by a `# HELP`, `# TYPE` or `# UNIT` line, or `None` for other
/// comments (including `# EOF`).
fn metadata_family(comment: &[u8]) -> Option<&[u8]> {
    let rest = comment
        .strip_prefix(b"# HELP ")
        .or_else(|| comment.strip_prefix(b"# TYPE "))
        .or_else(|| comment.strip_prefix(b"# UNIT "))?;
    let rest = trim_start(rest);
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let end = end_of_quoted(quoted, 0)?;
        return Some(&quoted[..end]);
    }
    let end = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r'))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|f| !f.is_empty())
}

/// Sample names a family's metadata covers: the family name itself and the
/// suffixes of histograms, summaries, counters and info metrics.
fn belongs_to_family(name: &[u8], family: &[u8]) -> bool {
    const SUFFIXES: [&[u8]; 8] = [
        b"_bucket",
        b"_sum",
        b"_count",
        b"_total",
        b"_created",
        b"_info",
        b"_gcount",
        b"_gsum",
    ];
    match name.strip_prefix(family) {
        Some([]) => true,
        Some(suffix) => SUFFIXES.contains(&suffix),
        None => false,
    }
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[skip..]
}

#[cfg(test)]
mod tests {
    use crate::prometheus::testing::{inject, rewrite, tenant};

    #[test]
    fn metadata_of_a_family_without_series_is_dropped() {
        let body = "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\n# HELP c C.\n";
        assert_eq!(
            rewrite(&tenant(""), body).unwrap(),
            "# HELP b B.\n# TYPE b gauge\nb 1\n"
        );
        // Metadata followed by another family's series is not attached to it.
        assert_eq!(
            rewrite(&tenant(""), "# TYPE a gauge\nz 1\n").unwrap(),
            "z 1\n"
        );
        // Quoted family names match quoted metric names.
        assert_eq!(
            rewrite(
                &tenant(""),
                "# TYPE \"a.b\" gauge\n{\"a.b\",namespace=\"shop\"} 1\n"
            )
            .unwrap(),
            "# TYPE \"a.b\" gauge\n{\"a.b\",namespace=\"shop\"} 1\n"
        );
    }

    #[test]
    fn lines_between_metadata_and_series_keep_their_place() {
        // Found by the fuzzer: a blank line after held metadata was written at
        // once, before the metadata it followed. (Plain comments are dropped in
        // tenant mode: free text is not the tenant's to read.)
        let body = "# TYPE a gauge\n\n# note\na 1\n# TYPE b gauge\n\n# EOF\n";
        assert_eq!(
            rewrite(&tenant(""), body).unwrap(),
            "# TYPE a gauge\n\na 1\n# EOF\n"
        );
        // Without held metadata they pass as before.
        assert_eq!(rewrite(&tenant(""), "\n# x\na 1\n").unwrap(), "\na 1\n");
        assert_eq!(
            rewrite(&inject("exported"), "\n# x\na 1\n").unwrap(),
            "\n# x\na 1\n"
        );
    }
}
