package chat

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/protocol"
)

// BenchmarkParseSend measures the strict send-body parser (with the
// envelope depth check) against encoding/json's plain Unmarshal of the same
// body, which the strict parser replaced, in one run.
func BenchmarkParseSend(b *testing.B) {
	for _, size := range []int{1 << 10, 60 << 10} {
		envelope := `{"v":1,"ct":"` + strings.Repeat("A", size) + `","k":[1,2,3]}`
		body := []byte(`{"to":"bob","id":"m-1","envelope":` + envelope + `}`)
		name := map[int]string{1 << 10: "1KiB", 60 << 10: "60KiB"}[size]
		b.Run(name+"/strict", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := ParseSend(body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/encoding_json", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var r protocol.SendRequest
				if err := json.Unmarshal(body, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
