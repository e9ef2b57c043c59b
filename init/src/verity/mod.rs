//! A root on a disk partition, checked by dm-verity as it is read.
//!
//! `dm` speaks the device-mapper ioctls, `table` writes the verity target's
//! line.

pub mod dm;
pub mod partition;
pub mod table;
