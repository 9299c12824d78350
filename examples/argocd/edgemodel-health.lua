-- Argo CD health check for edgefleet.dev/EdgeModel. Install it in argocd-cm under the key
-- resource.customizations.health.edgefleet.dev_EdgeModel (see examples/argocd/README.md).
--
-- Healthy: the spec is observed, the model is published for every device class and every
-- serving pod runs the current revision. Progressing: optimizing, publishing, rolling out or
-- waiting for a pause. Suspended: paused, or held at a manual gate. Degraded: stalled (a spec
-- problem, an accuracy floor that cannot be met, a failed optimization) or a rollout aborted by
-- its health gates. Written for Argo CD's Lua (5.1).
local hs = {}

local function condition(t)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == t then return c end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then return c.message end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end

local generation = obj.metadata.generation or 0
if (obj.status.observedGeneration or 0) < generation then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. generation
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, stalled.reason)
  return hs
end

local rollout = obj.status.rollout
local rolled = condition("RolledOut")
if rollout ~= nil then
  if rollout.state == "Aborted" or rollout.state == "Stalled" then
    hs.status = "Degraded"
    hs.message = text(rolled, rollout.waitingFor or rollout.state)
    return hs
  end
  local waiting = rollout.waitingFor or ""
  if rollout.state == "Paused" or string.find(waiting, "manual gate", 1, true) ~= nil then
    hs.status = "Suspended"
    hs.message = text(rolled, waiting)
    return hs
  end
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" and rolled ~= nil and rolled.status == "True" then
  hs.status = "Healthy"
  hs.message = text(rolled, "rolled out")
  return hs
end

hs.status = "Progressing"
if rolled ~= nil and ready ~= nil and ready.status == "True" then
  hs.message = text(rolled, "rolling out")
else
  hs.message = text(ready, "reconciling")
end
return hs
