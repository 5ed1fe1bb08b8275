package upgrader

import "context"

// Draining returns a channel that is closed when the server that serves the
// request whose context is ctx begins to drain: the process is handing over
// or stopping. A handler that holds its response open (server-sent events,
// long polls, streams, WebSockets) watches it to end cleanly: send a final
// event or a close frame, then return, so that the client reconnects, to
// the new process, well before the drain's deadline cuts it off. For a
// context that does not come from a request served by Serve or ServeTLS it
// returns nil, which never becomes ready.
//
//	select {
//	case <-upgrader.Draining(r.Context()):
//		fmt.Fprint(w, "event: bye\ndata: restarting\n\n")
//		return
//	case <-r.Context().Done():
//		return
//	case <-tick.C:
//		// send the next event
//	}
func Draining(ctx context.Context) <-chan struct{} {
	info, ok := ctx.Value(connKey{}).(connInfo)
	if !ok {
		return nil
	}
	return info.s.drainC
}
