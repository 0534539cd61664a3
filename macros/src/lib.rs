//! The `#[service]` attribute of quicall: one trait declares a service, and
//! the attribute generates its method constants, a typed client stub over
//! any `quicall::Caller` (a `Client` or a `Cluster`), and a router from an
//! implementation of the trait. Use it as `quicall::service`; the docs and
//! examples are there.

use proc_macro::TokenStream;

mod expand;
mod names;
mod parse;

/// Declares a quicall service. See `quicall::service` for the docs.
#[proc_macro_attribute]
pub fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    let result = parse::Args::parse(args.into())
        .and_then(|args| parse::Service::parse(args, syn::parse(item)?))
        .map(|service| expand::service(&service));
    match result {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}
