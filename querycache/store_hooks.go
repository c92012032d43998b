package querycache

// storeHooks let tests stop a store at the points where a concurrent invalidation
// matters, to drive the stale-set race deterministically. Nil hooks (production)
// cost a nil check.
type storeHooks struct {
	// BeforeStore runs after a fill was found valid and before it is written.
	BeforeStore func(key string)
	// AfterL2Read runs in Tiered.Get after the shared store answered a hit and
	// before the result is copied into the in-process store.
	AfterL2Read func(key string)
}

func (h *storeHooks) beforeStore(key string) {
	if h != nil && h.BeforeStore != nil {
		h.BeforeStore(key)
	}
}

func (h *storeHooks) afterL2Read(key string) {
	if h != nil && h.AfterL2Read != nil {
		h.AfterL2Read(key)
	}
}
