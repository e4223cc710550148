package postgres

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kez-chat/kezd/store/pgtest"
)

var envelopeCases = map[string]envelopes{
	"none":           {},
	"one empty":      {{}},
	"several":        {[]byte(`{"a":1}`), []byte(`"é ☃ 😀"`), {}, []byte(`[]`)},
	"batch of 1 KiB": slices.Repeat(envelopes{[]byte(`"` + strings.Repeat("x", 1022) + `"`)}, 12),
}

// encodeEnvelopes must write what pgx's own codec writes for the same
// [][]byte, after what the buffer already holds, in one allocation.
// (Not parallel: testing.AllocsPerRun refuses to run in a parallel test.)
func TestEnvelopesEncodeAsPgxDoes(t *testing.T) {
	ours := pgtype.NewMap()
	if err := withEnvelopes(ours); err != nil {
		t.Fatal(err)
	}
	theirs := pgtype.NewMap()
	for name, envs := range envelopeCases {
		prefix := []byte("earlier parameters")
		want, err := theirs.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, [][]byte(envs), bytes.Clone(prefix))
		if err != nil {
			t.Fatalf("%s: pgx: %v", name, err)
		}
		got, err := ours.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, envs, bytes.Clone(prefix))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encoded\n%x\npgx encodes\n%x", name, got, want)
		}
		allocs := testing.AllocsPerRun(20, func() {
			_, _ = encodeEnvelopes{}.Encode(envs, make([]byte, 0, 16))
		})
		if allocs > 1 {
			t.Errorf("%s: %.0f allocations to encode, want at most 1", name, allocs)
		}
	}
	// Any other value for a text[] is still pgx's to encode.
	got, err := ours.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, []string{"a", "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := theirs.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, []string{"a", "b"}, nil)
	if !bytes.Equal(got, want) {
		t.Errorf("[]string encoded %x, pgx encodes %x", got, want)
	}
}

// The store's connections encode envelopes themselves, and Postgres reads
// back what was sent.
func TestEnvelopesRoundTrip(t *testing.T) {
	t.Parallel()
	db, err := Open(context.Background(), Config{URL: pgtest.NewDatabase(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	conn, err := db.pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if typ, _ := conn.Conn().TypeMap().TypeForOID(pgtype.TextArrayOID); typ == nil {
		t.Fatal("no text[] type on the store's connection")
	} else if _, ok := typ.Codec.(textArrayCodec); !ok {
		t.Fatalf("the store's connection encodes text[] with %T, not textArrayCodec", typ.Codec)
	}
	for name, envs := range envelopeCases {
		var got []string
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT $1::text[], cardinality($1::text[])`, envs).Scan(&got, &n); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n != len(envs) || len(got) != len(envs) {
			t.Fatalf("%s: Postgres read %d elements (%d scanned), want %d", name, n, len(got), len(envs))
		}
		for i := range envs {
			if got[i] != string(envs[i]) {
				t.Errorf("%s: element %d is %q, want %q", name, i, got[i], envs[i])
			}
		}
	}
}
