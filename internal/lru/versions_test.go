package lru

import "testing"

func TestVersions(t *testing.T) {
	c := NewVersions[string, int, string](2)
	for p := 1; p <= versionsPerKey+1; p++ {
		c.Put("a", p, "a"+string(rune('0'+p)))
	}
	if _, ok := c.Get("a", 1); ok {
		t.Fatal("the oldest version outlived the newer ones")
	}
	for p := 2; p <= versionsPerKey+1; p++ {
		if v, ok := c.Get("a", p); !ok || v != "a"+string(rune('0'+p)) {
			t.Fatalf("version %d: %q, %v", p, v, ok)
		}
	}
	c.Put("a", 3, "again")
	if v, _ := c.Get("a", 3); v != "again" {
		t.Fatalf("a version put again holds %q", v)
	}
	if v, _ := c.Get("a", 2); v != "a2" {
		t.Fatalf("putting a held version again dropped another: %q", v)
	}
	c.Put("b", 1, "b")
	c.Put("c", 1, "c")
	if _, ok := c.Get("a", 5); ok || c.Len() != 2 {
		t.Fatalf("keys beyond the size: %d held, least recently used still there: %v", c.Len(), ok)
	}
}
