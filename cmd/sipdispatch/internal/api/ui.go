package api

import (
	"embed"
	"io/fs"
	"net/http"
)

// uiFiles are the web console's static files (docs/operations.md, "Web
// console"): plain HTML, CSS and JavaScript, embedded so that every node
// serves the console with nothing to build or install.
//
//go:embed ui
var uiFiles embed.FS

// uiHandler serves the console under /ui/. The files hold no state and no
// secret, so they are served without auth, like /healthz: a browser cannot
// attach a bearer token to a page load. Every call the page makes goes to
// /RPC or /metrics with the token from its login form, through the same
// auth as the CLI's calls.
func uiHandler() http.Handler {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Scripts and styles only from the node itself, no framing
		// (clickjacking the action buttons), no token in a Referer.
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// A node upgraded in place serves its own console at once.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
