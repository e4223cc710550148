package browsertest_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kez-chat/kezd/internal/browsertest"
)

const page = `<!doctype html><title>t</title><p id="p">hello</p><script src="/s.js"></script>`

func server(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(page))
	})
	mux.HandleFunc("/s.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Write([]byte(`document.getElementById("p").textContent = "from script"; console.log("ran");`))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// Two profiles are two people: storage written in one is absent in the other,
// and it survives a reload in the first.
func TestProfilesAreSeparate(t *testing.T) {
	srv := server(t)
	a := browsertest.Start(t, "a")
	b := browsertest.Start(t, "b")

	a.Do(chromedp.Navigate(srv.URL))
	text := browsertest.Run(a, chromedp.Text(chromedp.ID("p")))
	if text != "from script" {
		t.Fatalf("page text %q, want the script's", text)
	}
	browsertest.Eval[any](a, `localStorage.setItem("who", "a")`)
	a.Do(chromedp.Reload())
	got := browsertest.Eval[string](a, `localStorage.getItem("who") ?? ""`)
	if got != "a" {
		t.Fatalf("after reload a sees %q, want a", got)
	}

	b.Do(chromedp.Navigate(srv.URL))
	got = browsertest.Eval[string](b, `localStorage.getItem("who") ?? ""`)
	if got != "" {
		t.Fatalf("b sees a's storage %q", got)
	}
}

func TestEvalAwaitsPromises(t *testing.T) {
	srv := server(t)
	a := browsertest.Start(t, "a")
	a.Do(chromedp.Navigate(srv.URL))
	n := browsertest.Eval[int](a, `new Promise(r => setTimeout(() => r(42), 10))`)
	if n != 42 {
		t.Fatalf("got %d, want 42", n)
	}
}
