//! basalt-bench: `make bench`. See bench/README.md for what is measured and
//! how; `suite.rs` runs the parts in order.
//!
//! `line` is shared with the in-guest fixture `bench-handoff` and builds
//! without the `host` feature; everything else is the host side.
#![deny(unsafe_code)]

pub mod line;

/// The host side's modules, built only with the `host` feature.
macro_rules! host_modules {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "host")]
            pub mod $name;
        )*
    };
}

host_modules!(
    agent, boots, cli, error, hashing, images, load, report, results, sizes, stats, suite, svg, table, targets
);
