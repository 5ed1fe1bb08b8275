package state

import (
	"fmt"
	"runtime/debug"
)

// The byte layout is documented in PROTOCOL.md; keep the two in step.

// FormatVersion is the snapshot format version this package writes and
// reads. It changes only when the framing changes; the schema of each
// section is versioned separately by Participant.Version.
const FormatVersion uint16 = 1

const (
	// magic opens every snapshot.
	magic = "BATONSNP"

	// maxChunk is the largest chunk payload. It bounds what the decoder
	// allocates for one read, whatever a length field says, and it is
	// small enough to stay in cache between checksumming and copying.
	maxChunk = 1 << 20

	// maxName is the longest section name, in bytes.
	maxName = 64

	// maxField is the longest build-info string (one length byte).
	maxField = 255

	// MaxUserVersion is the longest Options.UserVersion, in bytes.
	MaxUserVersion = maxField

	tagSection = 'S'
	tagDelta   = 'D' // a section holding a PreCopy.Delta, only with flagDeltas
	tagEnd     = 'E'

	chunkHeaderLen = 8  // length u32, CRC u32
	trailerLen     = 17 // tag, count u32, total u64, CRC u32
)

// flagAlternates, in the header's flags, allows a section to be followed by
// alternates: sections of the same name at lower versions, for older
// readers (PROTOCOL.md).
const flagAlternates uint16 = 1 << 0

// flagPreCopy, in the header's flags, marks the first round of a pre-copy
// handoff: every section holds what a PreCopy.Capture wrote, for
// PreCopy.Restore (ReadPreCopy). flagDeltas marks the last round of one:
// sections tagged tagDelta hold what a PreCopy.Delta wrote after Freeze,
// for PreCopy.RestoreDelta. The two together mark a middle round: every
// section is tagged tagDelta and holds what a PreCopy.Delta wrote while
// the participant ran (ReadPreCopy). No other flags combine (PROTOCOL.md).
const (
	flagPreCopy uint16 = 1 << 1
	flagDeltas  uint16 = 1 << 2

	knownFlags = flagAlternates | flagPreCopy | flagDeltas
)

// Build describes the binary that wrote a snapshot, as far as it knows
// itself through runtime/debug.ReadBuildInfo. Empty fields are unknown: a
// binary built with -buildvcs=false has no Revision, a test binary has no
// Version.
type Build struct {
	Module    string `json:"module,omitempty"`   // main module path
	Version   string `json:"version,omitempty"`  // main module version: a tag, a pseudo-version or "(devel)"
	Revision  string `json:"revision,omitempty"` // vcs.revision
	Time      string `json:"time,omitempty"`     // vcs.time, RFC 3339
	Modified  bool   `json:"modified,omitempty"` // vcs.modified: built from a dirty work tree
	GoVersion string `json:"go,omitempty"`       // toolchain that built it
	User      string `json:"user,omitempty"`     // the producer's Options.UserVersion
}

// String returns a one-line summary for logs.
func (b Build) String() string {
	rev := b.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if b.Modified {
		rev += "+dirty"
	}
	return fmt.Sprintf("%s@%s rev=%s go=%s user=%q", b.Module, b.Version, rev, b.GoVersion, b.User)
}

// currentBuild reads this binary's build info. Strings longer than the
// format allows are cut: they are informational, unlike section names.
func currentBuild(user string) Build {
	b := Build{User: user}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b.Module = bi.Main.Path
		b.Version = bi.Main.Version
		b.GoVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	for _, f := range []*string{&b.Module, &b.Version, &b.Revision, &b.Time, &b.GoVersion} {
		if len(*f) > maxField {
			*f = (*f)[:maxField]
		}
	}
	return b
}

// validName reports whether name is 1 to maxName bytes of [a-z0-9._-].
func validName(name string) bool {
	if len(name) == 0 || len(name) > maxName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Section describes one section of a snapshot.
type Section struct {
	Name    string `json:"name"`
	Version uint32 `json:"version"` // schema version of the bytes
	// Bytes is the payload length. It is zero in a Manifest, which is
	// made before anything is captured.
	Bytes int64 `json:"bytes,omitempty"`
	// Delta reports a section of a middle or the last round of a
	// pre-copy handoff (Participant.PreCopy): what changed since the
	// round before, applied on top of it by PreCopy.RestoreDelta.
	Delta bool `json:"delta,omitempty"`
}
