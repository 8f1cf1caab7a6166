package dispatch

// Hash is Kamailio's ds_get_hash over one or two keys (y may be "" when
// absent): each key is read in 4-byte big-endian chunks whose bytes are C's
// signed char (so bytes >= 0x80 sign-extend), every chunk v adds v ^ (v>>3),
// the 0-3 bytes left over are shifted into one more v, and the sum is folded.
// It matches Kamailio bit for bit so that, for the same list, a request hashes
// to the same gateway as it does in Kamailio. It never returns 0 and does not
// allocate.
func Hash(x, y string) uint32 {
	return hashFold(hashAdd(hashAdd(0, x), y))
}

// hashBytes is Hash of a single key held in a byte slice (an expanded
// template), without converting it to a string.
func hashBytes(x []byte) uint32 { return hashFold(hashAdd(0, x)) }

// hashAdd adds one key to the running sum h. An empty key adds 0, which is
// what Kamailio's NULL key (no user part) contributes too.
func hashAdd[T string | []byte](h uint32, x T) uint32 {
	n := len(x)
	i := 0
	for ; i+4 <= n; i += 4 {
		v := schar(x[i])<<24 + schar(x[i+1])<<16 + schar(x[i+2])<<8 + schar(x[i+3])
		h += v ^ (v >> 3)
	}
	var v uint32
	for ; i < n; i++ {
		v = v<<8 + schar(x[i])
	}
	return h + (v ^ (v >> 3))
}

// hashFold is ds_get_hash's final mix; 0 is reserved, so it becomes 1.
func hashFold(h uint32) uint32 {
	h = (h + h>>11) + (h>>13 + h>>23)
	if h == 0 {
		return 1
	}
	return h
}

// schar widens b as C widens a signed char: 0x80..0xff become negative.
func schar(b byte) uint32 { return uint32(int32(int8(b))) }

// mix32 scrambles a 32-bit hash (murmur3's finaliser). hash_fallback
// "rehash" uses it so that the second index does not repeat the first
// modulo's pattern: h%n and mix32(h)%k are independent.
func mix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// mix64 is splitmix64's finaliser, used by algorithm 16 to turn a Call-ID
// and destination seed into a uniform 64-bit value.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// fnv64 is 64-bit FNV-1a; algorithm 16 hashes Call-IDs and destination keys
// with it (Kamailio's 32-bit hash is too narrow for rendezvous scores).
func fnv64[T string | []byte](x T) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(x); i++ {
		h ^= uint64(x[i])
		h *= 1099511628211
	}
	return h
}
