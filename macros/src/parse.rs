//! Reads and checks a service trait: every error a user can make is told
//! here, at the span where it is made, before any code is generated.

use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, Expr, FnArg, Ident, ItemTrait, LitStr, Pat, Path, ReturnType, Signature,
    TraitItem, TraitItemFn, Type, Visibility,
};

use crate::names;

/// The attribute's arguments: `#[service(package = "kv", name = "Store",
/// crate = "quicall")]`, all optional.
pub struct Args {
    package: Option<String>,
    name: Option<String>,
    krate: Option<Path>,
}

impl Args {
    pub fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let mut args = Args {
            package: None,
            name: None,
            krate: None,
        };
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("package") {
                args.package = Some(meta.value()?.parse::<LitStr>()?.value());
            } else if meta.path.is_ident("name") {
                args.name = Some(meta.value()?.parse::<LitStr>()?.value());
            } else if meta.path.is_ident("crate") {
                args.krate = Some(meta.value()?.parse::<LitStr>()?.parse()?);
            } else {
                return Err(meta.error("expected `package`, `name` or `crate`"));
            }
            Ok(())
        });
        syn::parse::Parser::parse2(parser, tokens)?;
        Ok(args)
    }
}

/// A service: its trait and its methods.
pub struct Service {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub ident: Ident,
    /// The module the generated items go into (`kv_store` for `KvStore`).
    pub module: Ident,
    /// `package.Service`, the prefix of every method's name.
    pub full_name: String,
    pub krate: Path,
    pub methods: Vec<Method>,
}

/// A method of a service.
pub struct Method {
    /// Doc comments and other attributes, carried to the trait and stub.
    pub attrs: Vec<Attribute>,
    pub ident: Ident,
    /// Its name on the wire after the service's: `Add` in `calc.Calc/Add`.
    pub wire_name: String,
    /// `Add` for `add`: the request type is `AddRequest`.
    pub camel: Ident,
    pub args: Vec<Arg>,
    /// `None` for `()`.
    pub output: Option<Value>,
    pub idempotent: bool,
    pub exact: bool,
    pub hedge: Option<Expr>,
    pub shape: Shape,
}

/// Which sides of a method's call are streams.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Unary,
    /// `#[quicall(server_stream)]`: a stream of responses.
    ServerStream,
    /// `#[quicall(client_stream)]`: a stream of requests.
    ClientStream,
    /// `#[quicall(bidi_stream)]`: both.
    BidiStream,
}

impl Shape {
    pub fn streams_requests(self) -> bool {
        matches!(self, Shape::ClientStream | Shape::BidiStream)
    }

    pub fn streams_responses(self) -> bool {
        matches!(self, Shape::ServerStream | Shape::BidiStream)
    }
}

/// An argument: a field of the method's request.
pub struct Arg {
    pub ident: Ident,
    pub value: Value,
}

/// A type that travels in a request or a response.
pub struct Value {
    pub ty: Type,
    /// A number, `bool` or `char`: handed over as a value rather than as
    /// its archived view.
    pub scalar: bool,
}

const SCALARS: &[&str] = &[
    "i8", "i16", "i32", "i64", "i128", "u8", "u16", "u32", "u64", "u128", "f32", "f64", "bool",
    "char",
];

impl Service {
    pub fn parse(args: Args, item: ItemTrait) -> syn::Result<Self> {
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            return Err(Error::new(
                item.generics.span(),
                "a service trait cannot be generic",
            ));
        }
        if !item.supertraits.is_empty() {
            return Err(Error::new(
                item.supertraits.span(),
                "a service trait has no supertraits (it gets `Send + Sync + 'static`)",
            ));
        }
        if let Some(unsafety) = item.unsafety {
            return Err(Error::new(
                unsafety.span,
                "a service trait cannot be unsafe",
            ));
        }
        let service_name = args.name.unwrap_or_else(|| item.ident.to_string());
        let full_name = match args.package {
            Some(package) => format!("{package}.{service_name}"),
            None => service_name,
        };
        check_name(&full_name, item.ident.span(), "service")?;
        let mut methods: Vec<Method> = Vec::new();
        for trait_item in item.items {
            let TraitItem::Fn(function) = trait_item else {
                return Err(Error::new(
                    trait_item.span(),
                    "a service trait holds only `async fn` methods",
                ));
            };
            let method = Method::parse(function)?;
            if let Some(twin) = methods
                .iter()
                .find(|m| m.wire_name == method.wire_name || m.camel == method.camel)
            {
                return Err(Error::new(
                    method.ident.span(),
                    format!(
                        "duplicate method name: `{}` and `{}` are both `{}/{}`",
                        twin.ident, method.ident, full_name, method.wire_name
                    ),
                ));
            }
            methods.push(method);
        }
        let module = Ident::new(&names::snake(&item.ident.to_string()), item.ident.span());
        Ok(Service {
            attrs: item.attrs,
            vis: item.vis,
            ident: item.ident,
            module,
            full_name,
            krate: args.krate.unwrap_or_else(|| syn::parse_quote!(::quicall)),
            methods,
        })
    }
}

impl Method {
    fn parse(function: TraitItemFn) -> syn::Result<Self> {
        if let Some(body) = &function.default {
            return Err(Error::new(
                body.span(),
                "a service method has no body here: implement the trait",
            ));
        }
        let sig = &function.sig;
        check_signature(sig)?;
        if ["new", "with_options", "caller"]
            .iter()
            .any(|n| sig.ident == n)
        {
            return Err(Error::new(
                sig.ident.span(),
                format!(
                    "`{}` is a method of the generated client: name this one otherwise \
                     (`#[quicall(name = \"...\")]` keeps its name on the wire)",
                    sig.ident
                ),
            ));
        }
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            Some(FnArg::Receiver(receiver))
                if receiver.reference.is_some() && receiver.mutability.is_none() => {}
            other => {
                let span = other.map_or(sig.ident.span(), Spanned::span);
                return Err(Error::new(span, "a service method takes `&self` first"));
            }
        }
        let args = inputs.map(Arg::parse).collect::<syn::Result<Vec<_>>>()?;
        let output = match &sig.output {
            ReturnType::Default => None,
            ReturnType::Type(_, ty) => Some(Value::parse(ty, "response")?),
        };
        let mut method = Method {
            attrs: Vec::new(),
            camel: Ident::new(&names::camel(&sig.ident.to_string()), sig.ident.span()),
            wire_name: names::camel(&sig.ident.to_string()),
            ident: sig.ident.clone(),
            args,
            output,
            idempotent: false,
            exact: false,
            hedge: None,
            shape: Shape::Unary,
        };
        for attr in function.attrs {
            if attr.path().is_ident("quicall") {
                method.options(&attr)?;
            } else {
                method.attrs.push(attr);
            }
        }
        check_name(&method.wire_name, method.ident.span(), "method")?;
        Ok(method)
    }

    /// `#[quicall(idempotent, exact, name = "...", hedge = EXPR,
    /// server_stream | client_stream | bidi_stream)]`.
    fn options(&mut self, attr: &Attribute) -> syn::Result<()> {
        attr.parse_nested_meta(|meta| {
            let shape = [
                ("server_stream", Shape::ServerStream),
                ("client_stream", Shape::ClientStream),
                ("bidi_stream", Shape::BidiStream),
            ]
            .into_iter()
            .find(|(name, _)| meta.path.is_ident(name));
            if let Some((_, shape)) = shape {
                if self.shape != Shape::Unary {
                    return Err(meta.error("a method has one shape"));
                }
                self.shape = shape;
            } else if meta.path.is_ident("idempotent") {
                self.idempotent = true;
            } else if meta.path.is_ident("exact") {
                self.exact = true;
            } else if meta.path.is_ident("name") {
                self.wire_name = meta.value()?.parse::<LitStr>()?.value();
            } else if meta.path.is_ident("hedge") {
                self.hedge = Some(meta.value()?.parse::<Expr>()?);
            } else {
                return Err(meta.error(
                    "expected `idempotent`, `exact`, `name`, `hedge`, `server_stream`, \
                     `client_stream` or `bidi_stream`",
                ));
            }
            Ok(())
        })?;
        if self.hedge.is_some() && !self.idempotent {
            return Err(Error::new(
                attr.span(),
                "only idempotent methods can be hedged: add `idempotent`",
            ));
        }
        if self.hedge.is_some() && self.shape != Shape::Unary {
            return Err(Error::new(attr.span(), "a stream cannot be hedged"));
        }
        Ok(())
    }
}

fn check_signature(sig: &Signature) -> syn::Result<()> {
    if sig.asyncness.is_none() {
        return Err(Error::new(
            sig.fn_token.span,
            "a service method is an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new(
            sig.generics.span(),
            "a service method cannot be generic",
        ));
    }
    if let Some(token) = sig.constness.map(|t| t.span) {
        return Err(Error::new(token, "a service method cannot be const"));
    }
    if let Some(token) = sig.unsafety.map(|t| t.span) {
        return Err(Error::new(token, "a service method cannot be unsafe"));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(Error::new(
            variadic.span(),
            "a service method is not variadic",
        ));
    }
    Ok(())
}

fn check_name(name: &str, span: Span, what: &str) -> syn::Result<()> {
    if name.is_empty() || name.contains(['/', ' ', '\t', '\n']) {
        return Err(Error::new(
            span,
            format!("the {what} name `{name}` is empty or has `/` or white space"),
        ));
    }
    Ok(())
}

impl Arg {
    fn parse(input: &FnArg) -> syn::Result<Self> {
        let FnArg::Typed(typed) = input else {
            return Err(Error::new(input.span(), "`self` comes first, once"));
        };
        let ident = match &*typed.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
            pat => {
                return Err(Error::new(
                    pat.span(),
                    "an argument of a service method is a plain name",
                ));
            }
        };
        if ident == "ctx" {
            return Err(Error::new(
                ident.span(),
                "`ctx` is the name of the server's `Context` argument: name this one otherwise",
            ));
        }
        Ok(Arg {
            ident,
            value: Value::parse(&typed.ty, "argument")?,
        })
    }
}

impl Value {
    fn parse(ty: &Type, what: &str) -> syn::Result<Self> {
        check_type(ty, what)?;
        let scalar = match ty {
            Type::Path(path) if path.qself.is_none() => path
                .path
                .get_ident()
                .is_some_and(|ident| SCALARS.iter().any(|s| ident == s)),
            _ => false,
        };
        Ok(Value {
            ty: ty.clone(),
            scalar,
        })
    }
}

/// Owned types that rkyv can archive: no references, `impl Trait`, trait
/// objects, pointers, functions, `Self` or a `Result` (the method's
/// failure is its `Status`).
fn check_type(ty: &Type, what: &str) -> syn::Result<()> {
    let unsupported = |why: &str| {
        Err(Error::new(
            ty.span(),
            format!(
                "unsupported {what} type: {why}; use owned types that derive rkyv's \
                 `Archive` and `Serialize` (numbers, `String`, `Vec<T>`, `Option<T>`, your structs)"
            ),
        ))
    };
    match ty {
        Type::Reference(_) => unsupported("a reference"),
        Type::ImplTrait(_) => unsupported("`impl Trait`"),
        Type::TraitObject(_) => unsupported("a trait object"),
        Type::Ptr(_) => unsupported("a raw pointer"),
        Type::BareFn(_) => unsupported("a function"),
        Type::Infer(_) => unsupported("`_`"),
        Type::Never(_) => unsupported("`!`"),
        Type::Macro(_) => unsupported("a macro"),
        Type::Paren(inner) => check_type(&inner.elem, what),
        Type::Group(inner) => check_type(&inner.elem, what),
        Type::Array(array) => check_type(&array.elem, what),
        Type::Slice(_) => unsupported("an unsized slice (use `Vec<T>`)"),
        Type::Tuple(tuple) => tuple
            .elems
            .iter()
            .try_for_each(|elem| check_type(elem, what)),
        Type::Path(path) => {
            let last = path.path.segments.last();
            if path.qself.is_some() || path.path.segments.iter().any(|s| s.ident == "Self") {
                return unsupported("`Self`");
            }
            if what == "response" && last.is_some_and(|s| s.ident == "Result") {
                return unsupported(
                    "a `Result` (declare the response type: the method returns \
                     `Result<it, Status>` by itself)",
                );
            }
            for segment in &path.path.segments {
                if let syn::PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        if let syn::GenericArgument::Type(inner) = arg {
                            check_type(inner, what)?;
                        }
                    }
                }
            }
            Ok(())
        }
        _ => unsupported("not a plain type"),
    }
}
