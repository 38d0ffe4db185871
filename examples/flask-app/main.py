"""The seed's example Flask app, deployable with `git push production main`.

cutover starts each release on a fresh internal port given as $PORT and puts
its own proxy on the public port, so the app listens where $PORT says.
"""
import os

from flask import Flask

app = Flask(__name__)


@app.route('/')
def index():
    return {'message': 'Hello from Deployment Paradigm!',
            'release': os.environ.get('CUTOVER_RELEASE', 'dev')}


@app.route('/health')
def health():
    return {'status': 'healthy'}, 200


if __name__ == '__main__':
    app.run(host=os.environ.get('HOST', '127.0.0.1'),
            port=int(os.environ.get('PORT', '8000')))
