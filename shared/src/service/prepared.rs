//! A chat request that passed every check (route, price, prompt) and is ready for a provider:
//! what the admission, call, stream and structured-output steps share.

use std::sync::Arc;

use crate::domain::chat::{ChatRequest, Message};
use crate::domain::pricing::ModelPrice;
use crate::domain::tenant::{Route, TenantConfig};
use crate::domain::usage::TokenUsage;
use crate::ports::provider::{LlmProvider, ProviderRequest};

use super::failover::Leg;
use super::retrieval::RetrievedContext;

/// A request that passed every check and is ready for a provider.
pub(crate) struct Prepared {
    pub config: Arc<TenantConfig>,
    pub request: ChatRequest,
    pub route: Route,
    pub price: ModelPrice,
    pub provider: Arc<dyn LlmProvider>,
    /// The route's fallbacks that this deployment can call, priced, in order.
    pub fallbacks: Vec<Leg>,
    pub upstream: ProviderRequest,
    pub cache_key: Option<String>,
    /// Excerpts of the tenant's documents added to the prompt.
    pub context: Option<RetrievedContext>,
    /// Stored turns of the request's conversation, placed before its messages.
    pub history: Vec<Message>,
    /// The end-user profile the system prompt was rendered with (if it uses one).
    pub profile: Option<Arc<crate::domain::profile::UserProfile>>,
    /// What the limiter reserved: the prompt as the gateway counts it and the reply's cap.
    /// A call that spent tokens the provider never reported is metered as this.
    pub estimate: TokenUsage,
}

impl Prepared {
    /// The chain a call walks: the route's own target, then its fallbacks.
    pub(crate) fn legs(&self) -> Vec<Leg> {
        let mut legs = Vec::with_capacity(1 + self.fallbacks.len());
        legs.push(Leg {
            route: self.route.clone(),
            price: self.price.clone(),
            provider: self.provider.clone(),
            inference_profile: self.upstream.inference_profile.clone(),
        });
        legs.extend(self.fallbacks.iter().cloned());
        legs
    }

    /// Puts a conversation's earlier turns before this request's messages. Not cacheable:
    /// the same request means something else in another conversation.
    pub(crate) fn recall(&mut self, history: Vec<Message>) {
        self.upstream.messages.splice(0..0, history.iter().cloned());
        self.cache_key = None;
        self.history = history;
    }

    /// Serves the rest of the call from `leg` (a fallback that answered): its route, price
    /// and provider, and its model upstream.
    pub(crate) fn serve_with(&mut self, leg: &Leg) {
        self.route = leg.route.clone();
        self.price = leg.price.clone();
        self.provider = leg.provider.clone();
        self.upstream.model = leg.route.model.clone();
        self.upstream.inference_profile = leg.inference_profile.clone();
    }

    /// Re-applies what `from` carried (history, excerpts) to a re-prepared request.
    pub(crate) fn carry_over(&mut self, from: Prepared) {
        if !from.history.is_empty() {
            self.recall(from.history);
        }
        if let Some(context) = from.context {
            self.attach(context);
        }
    }

    /// Puts retrieved excerpts before the conversation. A grounded request is never served from
    /// or stored in the response cache: its answer depends on documents that can change.
    pub(crate) fn attach(&mut self, context: RetrievedContext) {
        self.upstream.messages.insert(0, context.message.clone());
        self.cache_key = None;
        self.context = Some(context);
    }
}
