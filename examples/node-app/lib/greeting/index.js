// The app's one dependency: it resolves only once `npm ci` has installed it.
module.exports = (who) => `Hello from ${who}!`;
