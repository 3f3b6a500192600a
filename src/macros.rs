//! Small macros shared by the middleware types.

/// `get_ref`, `get_mut` and `into_inner` for a service with a field `inner:
/// S`, as tower-http's middleware have them.
macro_rules! define_inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes this service and returns the inner one.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
