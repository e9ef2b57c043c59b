//! Bakes the image-signing public key into basalt-init.
//!
//! The key must live outside the image it vouches for, so it is compiled in:
//! BASALT_IMAGE_PUBKEY names a public key file (raw 32 bytes, DER or PEM SPKI).
//! Without it the binary still builds (for `cargo test` and clippy), but it
//! refuses every boot with a message saying no key was compiled in.
use std::{env, fs, path::Path};

fn main() {
    println!("cargo:rerun-if-env-changed=BASALT_IMAGE_PUBKEY");
    let out = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("image_key.rs");
    let code = match env::var_os("BASALT_IMAGE_PUBKEY") {
        None => "pub const IMAGE_KEY: Option<[u8; 32]> = None;\n".to_string(),
        Some(path) => {
            let path = Path::new(&path);
            println!("cargo:rerun-if-changed={}", path.display());
            let bytes = fs::read(path).unwrap_or_else(|e| panic!("BASALT_IMAGE_PUBKEY={}: {e}", path.display()));
            let key = basalt_common::keys::PublicKey::parse(&bytes)
                .unwrap_or_else(|e| panic!("BASALT_IMAGE_PUBKEY={}: {e}", path.display()));
            format!("pub const IMAGE_KEY: Option<[u8; 32]> = Some({:?});\n", key.raw())
        }
    };
    fs::write(out, code).expect("write image_key.rs");
}
