//! Through real processes: placeholder until the next step.
