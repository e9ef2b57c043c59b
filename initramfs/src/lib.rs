//! basalt-mkimage: builds basalt's signed initramfs.
//!
//! The pieces are public so the QEMU test suite can assemble images of its
//! own, including deliberately tampered ones:
//! - [`assemble::build`] does the whole job the CLI's `build` does;
//! - [`image::describe`] + [`image::sign_manifest`] make a signed manifest;
//! - [`image::pack_initramfs`] packs any parts, matching or not;
//! - [`cpio::CpioWriter`] writes arbitrary newc archives.

pub mod assemble;
pub mod bundle;
pub mod cpio;
pub mod disk;
pub mod esp;
pub mod image;
pub mod kconfig;
pub mod modinfo;
pub mod modules;
pub mod squashfs;
pub mod tools;
pub mod uki;
pub mod varfs;

pub use assemble::{build, kernel_check, BuildError, BuildReport, BuildSpec, RootSource};
pub use image::{pack_initramfs, pack_initramfs_file, Compression, Content, InitramfsParts};
