package service

// Progress is a running job's position, reported a few times a second.
type Progress struct {
	Phase string `json:"phase"` // "backup", "restore"
	Done  int64  `json:"done"`  // bytes
	Total int64  `json:"total"` // bytes
	// Notice is a message for the user (printed on stderr) instead of a
	// position: something the result alone would hide.
	Notice string `json:"notice,omitempty"`
}

// ProgressFunc receives progress; nil means nobody is watching.
type ProgressFunc func(Progress)

func (f ProgressFunc) report(p Progress) {
	if f != nil {
		f(p)
	}
}
