package sdupgrade

// Host is the seam through which the tests drive an Integration without an
// upgrader.Upgrader (only one can exist per process, and it starts real
// processes).
type Host = host

// AttachHost is Attach for a Host.
func AttachHost(h Host, opts AttachOptions) (*Integration, error) { return attach(h, opts) }
