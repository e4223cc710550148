package postgres

import (
	"bytes"
	"context"
	"reflect"
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

var textCases = map[string][]string{
	"nil":     nil,
	"none":    {},
	"one":     {"alice"},
	"several": {"alice", "", "é ☃ 😀", "bob"},
}

// encodeTextArray must write what pgx's own codec writes for the same
// [][]byte or []string, after what the buffer already holds, in one
// allocation. (Not parallel: testing.AllocsPerRun refuses to run in a
// parallel test.)
func TestTextArraysEncodeAsPgxDoes(t *testing.T) {
	ours := pgtype.NewMap()
	if err := withEnvelopes(ours); err != nil {
		t.Fatal(err)
	}
	theirs := pgtype.NewMap()
	check := func(name string, value, asPgx any) {
		t.Helper()
		prefix := []byte("earlier parameters")
		want, err := theirs.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, asPgx, bytes.Clone(prefix))
		if err != nil {
			t.Fatalf("%s: pgx: %v", name, err)
		}
		got, err := ours.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, value, bytes.Clone(prefix))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encoded\n%x\npgx encodes\n%x", name, got, want)
		}
		if value == nil || reflect.ValueOf(value).IsNil() {
			return // NULL, which pgx encodes without a plan
		}
		plan := ours.PlanEncode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, value)
		if allocs := testing.AllocsPerRun(20, func() { _, _ = plan.Encode(value, nil) }); allocs > 1 {
			t.Errorf("%s: %.0f allocations to encode, want at most 1", name, allocs)
		}
	}
	for name, envs := range envelopeCases {
		check("envelopes "+name, envs, [][]byte(envs))
	}
	for name, texts := range textCases {
		check("texts "+name, texts, pgtype.FlatArray[string](texts))
	}
	// Any other value for a text[] is still pgx's to encode.
	other := []*string{nil, new(string)}
	got, err := ours.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, other, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := theirs.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, other, nil)
	if !bytes.Equal(got, want) {
		t.Errorf("[]*string encoded %x, pgx encodes %x", got, want)
	}
}

// The store's connections encode envelopes and []string themselves, and
// Postgres reads back what was sent.
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
	for name, texts := range textCases {
		var got []string
		var null bool
		if err := conn.QueryRow(context.Background(), `SELECT $1::text[], $1::text[] IS NULL`, texts).Scan(&got, &null); err != nil {
			t.Fatalf("texts %s: %v", name, err)
		}
		if null != (texts == nil) || !slices.Equal(got, texts) {
			t.Errorf("texts %s: Postgres read %q (NULL: %v), want %q", name, got, null, texts)
		}
	}
}
